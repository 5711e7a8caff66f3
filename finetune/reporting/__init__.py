"""Reporting: Markdown/HTML pages built only from what run folders hold (no model needed).

One run's report (`report`), a cross-validation's report (`crossval`), and one summary of many
run folders with floors for CI (`summary`).
"""

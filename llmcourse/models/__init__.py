"""Whole models, one module per architecture (chapter 5 onwards), and loading their checkpoints."""

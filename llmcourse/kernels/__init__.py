"""GPU kernels written in Triton (chapter 6): FlashAttention's forward pass, and the wrapper that
imports Triton only when a kernel is first called."""

"""Triton kernels for oa."""

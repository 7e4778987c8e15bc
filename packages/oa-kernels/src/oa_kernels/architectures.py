"""``config.model_type`` values each patch supports (torch-free: read by the plugin module)."""

ROPE = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
        "granite", "starcoder2", "phi", "phi3", "gpt_neox", "olmo", "olmo2")
GEGLU = ("gemma", "gemma2", "gemma3_text")
# no logit softcapping/scaling and a bias-free Linear LM head
LINEAR_CE = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "phi3", "olmo",
             "olmo2", "starcoder2", "gpt_neox")
ANY = ("*",)
BY_KERNEL = {"gelu": ANY, "geglu": GEGLU, "rope": ROPE, "fused_linear_ce": LINEAR_CE}

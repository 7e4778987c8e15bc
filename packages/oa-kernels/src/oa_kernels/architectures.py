"""``config.model_type`` values each patch supports (torch-free: read by the plugin module)."""

ROPE = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
        "granite", "starcoder2", "phi", "phi3", "gpt_neox", "olmo", "olmo2")
GEGLU = ("gemma", "gemma2", "gemma3_text")
# MLPs with gate_proj/up_proj/down_proj and a SiLU act_fn
SWIGLU = ("llama", "mistral", "qwen2", "qwen3", "granite", "olmo2")
# RMSNorm modules with `weight` and `variance_epsilon`, computed as Llama's
RMSNORM = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "granite", "olmo2", "phi3")
# no logit softcapping/scaling and a bias-free Linear LM head
LINEAR_CE = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "phi3", "olmo",
             "olmo2", "starcoder2", "gpt_neox")
ANY = ("*",)
BY_KERNEL = {"gelu": ANY, "geglu": GEGLU, "swiglu": SWIGLU, "rmsnorm": RMSNORM, "rope": ROPE,
             "fused_linear_ce": LINEAR_CE}

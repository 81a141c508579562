"""Configuration as data: dataclasses and named presets.

Every other module of molmo_lite imports its numbers from here, so a preset changes the scale of the whole course
(``tiny`` on a laptop CPU, ``molmo`` for the released geometry) without touching code. Later chapters add the vision,
connector, LLM and training configs beside these.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# The special tokens Molmo adds to the LLM's vocabulary for the image (allenai/molmo, olmo/data/model_preprocessor.py).
IM_START = "<im_start>"
IM_END = "<im_end>"
IM_PATCH = "<im_patch>"
IM_COL = "<im_col>"
IMAGE_PROMPT = "<|image|>"
IMAGE_TOKENS = (IM_START, IM_END, IM_PATCH, IM_COL, IMAGE_PROMPT)
# The tokens of an image's layout in the text (the prompt placeholder <|image|> is replaced by them). Molmo2 adds a
# start token for its low-resolution overview and tokens for video frames (transformers' Molmo2Processor lists these
# as its image tokens); a tokenizer that holds them gets them as image tokens too (MolmoLite.image_layout_ids).
IMAGE_LAYOUT_TOKENS = (IM_START, IM_END, IM_PATCH, IM_COL)
LOW_RES_IM_START = "<low_res_im_start>"
MOLMO2_LAYOUT_TOKENS = (LOW_RES_IM_START, "<im_low>", "<frame_start>", "<frame_end>")

# Where chapters save what later chapters reuse (the tiny pretrained encoder, ...): ./checkpoints of the repository,
# or $MOLMO_LITE_CHECKPOINTS. Nothing there is committed: every chapter can rebuild what it needs.
REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = Path(os.environ.get("MOLMO_LITE_CHECKPOINTS", REPO_ROOT / "checkpoints"))


def shown_path(path: str | os.PathLike) -> str:
    """A path as the course prints it: relative to the repository when inside it (checkpoints/tiny_vit), with ~ for
    the home folder otherwise, so that printed outputs do not carry the machine's absolute paths."""
    for where in (Path(os.path.abspath(path)), Path(path).resolve()):  # abspath keeps .venv/bin/python a venv path
        if where.is_relative_to(REPO_ROOT):
            return str(where.relative_to(REPO_ROOT)) or "."
    where, home = Path(os.path.abspath(path)), Path.home()
    return "~/" + str(where.relative_to(home)) if where.is_relative_to(home) else str(path)

# OpenAI CLIP's normalisation, which Molmo uses ("openai" in its code).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessorConfig:
    """Geometry of Molmo's overlap-and-resize preprocessing (as allenai/molmo does it).

    crop_size: side of every crop and of the global image, in pixels.
    patch_size: ViT patch side in pixels; crop_size must be a multiple of it.
    max_crops: largest number of high-resolution crops (the global image is extra).
    overlap_margins: (left/top, right/bottom) margins in patches that neighbouring crops share.
    pooling: (pool_h, pool_w) patches merged into one image token by the connector.
    resize: "pad" keeps the aspect ratio and pads (Molmo 1); "stretch" resizes to the exact target (Molmo2).
    antialias: antialiased bilinear resizing (Molmo 1 resizes float images with antialias=True).
    low_res_start / low_res_cols: how the global image's (overview's) tokens are written: Molmo 1 opens it with
        <im_start> and ends every row with <im_col>, like the crops; Molmo2-8B opens it with <low_res_im_start> and
        writes no <im_col> in it (its processor_config.json: use_single_crop_start_token true,
        use_single_crop_col_tokens false; transformers' Molmo2Processor.replace_image_token).
    crop_mode: "overlap-and-resize" (the released models': the overview, then the overlapping crops) or "resize"
        (Molmo's single-crop mode: the image resized into one crop, the overview alone, no high-res crops). An
        image that fits one crop gets the same pixels twice in the first mode (overview and its one crop), once here.
    """

    crop_size: int = 336
    patch_size: int = 14
    max_crops: int = 12
    overlap_margins: tuple[int, int] = (4, 4)
    pooling: tuple[int, int] = (2, 2)
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    resize: str = "pad"
    antialias: bool = True
    low_res_start: str = IM_START
    low_res_cols: bool = True
    crop_mode: str = "overlap-and-resize"

    def to_dict(self) -> dict:
        return asdict(self)


PREPROCESSOR_PRESETS: dict[str, PreprocessorConfig] = {
    # The released Molmo models (MolmoE-1B, Molmo-7B-O/D, 72B): 336 px crops of 24x24 patches.
    "molmo": PreprocessorConfig(),
    # High-resolution evaluation setting of the paper.
    "molmo-hires": PreprocessorConfig(max_crops=36),
    # CPU-sized: 56 px crops of 4x4 patches, one patch of overlap per side, up to 4 crops.
    "tiny": PreprocessorConfig(crop_size=56, patch_size=14, max_crops=4, overlap_margins=(1, 1)),
    # One GPU from scratch: 112 px crops of 8x8 patches.
    "small": PreprocessorConfig(crop_size=112, patch_size=14, max_crops=6, overlap_margins=(2, 2)),
}


def preprocessor_preset(name: str) -> PreprocessorConfig:
    """The named preprocessing geometry; ValueError lists the known names."""
    try:
        return PREPROCESSOR_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PREPROCESSOR_PRESETS)}") from None


@dataclass(frozen=True)
class VisionConfig:
    """A CLIP-style vision transformer (chapter 02). Defaults: OpenAI CLIP ViT-L/14 at 336 px, as Molmo reads it.

    layers: blocks built (Molmo keeps 23 of CLIP's 24: ``num_layers_used``); feature_layers: which block outputs
    the connector reads, negative = from the last block used (Molmo: [-2, -9], concatenated on channels).
    act: "quick_gelu" (OpenAI CLIP), "gelu" or "gelu_tanh" (SigLIP, Molmo2). output_dim: CLIP's projection head (used
    only for contrastive pre-training; Molmo's path never reaches it), None for no head.

    Molmo2's SigLIP-style ViT is the same transformer with three switches off or on: no class token (cls_token=False, so
    the position table has one row per patch), no LayerNorm after the embeddings (pre_ln=False), and a bias in the
    patch embedding (patch_bias=True).
    """

    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_width: int = 4096
    act: str = "quick_gelu"
    ln_eps: float = 1e-5
    num_layers_used: int | None = 23
    feature_layers: tuple[int, ...] = (-2, -9)
    output_dim: int | None = 768
    cls_token: bool = True
    pre_ln: bool = True
    patch_bias: bool = False

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    @property
    def blocks_used(self) -> int:
        return self.layers if self.num_layers_used is None else self.num_layers_used

    @property
    def feature_dim(self) -> int:
        """Channels of the selected features: width x number of feature layers (Molmo: 2 x 1024)."""
        return self.width * len(self.feature_layers)


@dataclass(frozen=True)
class ConnectorConfig:
    """The connector between ViT and LLM (chapter 03), MOLMO defaults for ViT-L/14 + Qwen2-7B.

    input_dim: ViT feature channels after layer concatenation (2 x 1024); pool_dim: output of the attention pooling
    (= ViT width in Molmo); heads x head_dim: pooling attention; hidden_dim: SwiGLU projector's hidden size;
    llm_dim: the LLM's embedding size.

    Two options of the course, off in Molmo (the released weights and the parity tests use neither):
    feature_norm: normalise the ViT features before pooling, each of ``feature_norm`` equal channel groups (one per
    feature layer) to zero mean and unit variance, without parameters (0 = off). init_scale: multiply the projector's
    initial weights (PyTorch's default uniform init) by this. The tiny preset uses both: its raw ViT features and its
    small projector otherwise give the LLM image embeddings 10x smaller than its text embeddings, and the image is
    ignored (docs/recipes.md measures it).

    A third, for the tiny pointing path (chapter 07's world): cell_decisions = (colours, shapes, grid) puts a linear
    head on the ViT's features before the pad embeddings and pooling, and hands on its decisions instead of the
    features: for each patch, the one-hots of the colour and shape it names (zeros where it names "empty"), its
    offset, and the patch's row and column (``connector.CellDecisions``). The head is the one the ViT was
    pre-trained through (``pointing_only.pretrain_vit_cells``); the pooling then reads colours + shapes + 2 +
    2 x grid channels. () = off (Molmo). decision_features > 0 (with cell_decisions): the ViT's features, each
    patch's vector normalised to zero mean and unit variance and scaled by this, handed on beside the decisions, for
    what the cell head does not decide (a clock's hands: a linear read-out of the claim ViT's features tells the time
    within 3 minutes on 97% of held-out clocks, of its decisions on 19%). decision_features_dim > 0: only the
    features' coordinates on this many fixed directions (a buffer, ``Connector.feature_basis``, set by
    ``pointing_only.fit_feature_basis``: their main components, whitened), so that decisions and features together
    fit the pooling's width without being mixed into each other.
    """

    input_dim: int = 2048
    pool_dim: int = 1024
    heads: int = 16
    head_dim: int = 64
    hidden_dim: int = 18944
    llm_dim: int = 3584
    pad_embed: bool = True
    feature_norm: int = 0
    init_scale: float = 1.0
    cell_decisions: tuple[int, ...] = ()
    decision_features: float = 0.0
    decision_features_dim: int = 0


VISION_PRESETS: dict[str, VisionConfig] = {
    # OpenAI CLIP ViT-L/14 at 336 px as Molmo reads it: 23 of 24 blocks, features of blocks -2 and -9.
    "molmo": VisionConfig(),
    # CPU-sized: 56 px crops (the tiny preprocessor preset), 4 blocks of width 96; reads the last and third-to-last.
    "tiny": VisionConfig(image_size=56, patch_size=14, width=96, layers=4, heads=4, mlp_width=384, act="gelu",
                         num_layers_used=None, feature_layers=(-1, -3), output_dim=64),
    # One GPU from scratch: 112 px crops (the small preprocessor preset), 8 blocks of width 384.
    "small": VisionConfig(image_size=112, patch_size=14, width=384, layers=8, heads=6, mlp_width=1536, act="gelu",
                          num_layers_used=None, feature_layers=(-1, -4), output_dim=None),
}


CONNECTOR_PRESETS: dict[str, ConnectorConfig] = {
    # Molmo-7B-D: ViT-L features (2 x 1024) -> pooled 1024 -> Qwen2-7B's 3584 through an 18944-wide SwiGLU.
    "molmo": ConnectorConfig(),
    # Matches VISION_PRESETS["tiny"] (2 x 96 feature channels) and a tiny LLM of width 128.
    # feature_norm / init_scale: see ConnectorConfig (measured in benchmarks/recipes.py, recipe "v1-connector").
    "tiny": ConnectorConfig(input_dim=192, pool_dim=96, heads=4, head_dim=24, hidden_dim=256, llm_dim=128,
                            feature_norm=2, init_scale=3.0),
    # Matches VISION_PRESETS["small"] (2 x 384) and LLM_PRESETS["small"] (512).
    "small": ConnectorConfig(input_dim=768, pool_dim=384, heads=6, head_dim=64, hidden_dim=1536, llm_dim=512),
}


@dataclass(frozen=True)
class LLMConfig:
    """A decoder-only LLM (chapter 04). Defaults: Qwen2-7B as in Molmo-7B-D.

    qkv_bias: Qwen2's biases on q/k/v. qk_norm: an RMSNorm on q and k before RoPE; qk_norm_scope "full": over the whole
    projection (OLMo 2, Molmo-7B-O, Molmo2's "olmo"), "head": over each head's head_dim channels, one weight shared
    by the heads (Qwen3, Molmo2's "qwen3"). norm_after:
    OLMo 2's layout, x + norm(block(x)), instead of the pre-norm x + block(norm(x)). additional_vocab: Molmo's extra
    embedding rows for its new tokens (128), trained with the connector; the output head is not extended.
    """

    vocab_size: int = 152064
    hidden: int = 3584
    layers: int = 28
    heads: int = 28
    kv_heads: int = 4
    head_dim: int | None = None  # default hidden // heads
    intermediate: int = 18944
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    qkv_bias: bool = True
    qk_norm: bool = False
    qk_norm_scope: str = "full"
    norm_after: bool = False
    tie_embeddings: bool = False
    additional_vocab: int = 128

    def __post_init__(self):
        if self.qk_norm_scope not in ("full", "head"):
            raise ValueError(f"qk_norm_scope must be 'full' (OLMo 2) or 'head' (Qwen3), got {self.qk_norm_scope!r}")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads


LLM_PRESETS: dict[str, LLMConfig] = {
    "qwen2-7b": LLMConfig(),
    # OLMo-7B-1024 (Molmo-7B-O): the OLMo 2 layout.
    "olmo-7b": LLMConfig(vocab_size=100352, hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008,
                         rope_theta=500_000.0, rms_eps=1e-6, qkv_bias=False, qk_norm=True, norm_after=True),
    # CPU-sized, Qwen2-style, for the tiny BPE tokenizer of data_samples/ (512 ids; image tokens 512-516).
    "tiny": LLMConfig(vocab_size=512, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384,
                      rope_theta=10_000.0, rms_eps=1e-6, qkv_bias=True, tie_embeddings=True, additional_vocab=128),
    # One GPU from scratch (~25M parameters), same tokenizer as tiny.
    "small": LLMConfig(vocab_size=512, hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1536,
                       rope_theta=10_000.0, rms_eps=1e-6, qkv_bias=True, tie_embeddings=True, additional_vocab=128),
}


@dataclass(frozen=True)
class MolmoConfig:
    """The whole model (chapter 05): preprocessing, ViT, connector and LLM geometry, plus the loss options.

    tokenizer: "tiny" (the course BPE of data_samples/), or where the released tokenizer lives (a local folder
               with tokenizer.json, e.g. a downloaded allenai/Molmo-7B-D-0924).
    z_loss: weight of Molmo's z-loss, ``z_loss * logsumexp(logits)^2`` per loss token (Molmo trains with 1e-4; 0 = off).
    image_attention: "causal" (Molmo 1: every token sees only the tokens before it) or "bidirectional" (Molmo2: the
               tokens of the images' layout, IMAGE_LAYOUT_TOKENS, all see one another; the text stays causal).
    question_first: False (Molmo: [BOS] image question answer) or True (the course's tiny models: [BOS] " User: Q"
               image " Assistant:" answer, so that the image tokens of a causal LLM can read the question; the oracle
               harness measured why, docs/recipes.md "Eyes or brain"). ``prompts.generation_prompt_ids`` lays it out.
    """

    preprocessor: PreprocessorConfig = PreprocessorConfig()
    vision: VisionConfig = VisionConfig(output_dim=None)
    connector: ConnectorConfig = ConnectorConfig()
    llm: LLMConfig = LLMConfig()
    tokenizer: str = "tiny"
    z_loss: float = 0.0
    image_attention: str = "causal"
    question_first: bool = False

    def __post_init__(self):
        if self.image_attention not in ("causal", "bidirectional"):
            raise ValueError(f"image_attention must be 'causal' (Molmo 1) or 'bidirectional' (Molmo2), got "
                             f"{self.image_attention!r}")
        if self.connector.input_dim != self.vision.feature_dim:
            raise ValueError(f"connector.input_dim ({self.connector.input_dim}) must equal the ViT's feature channels "
                             f"({self.vision.feature_dim} = width x {len(self.vision.feature_layers)} layers)")
        if self.connector.llm_dim != self.llm.hidden:
            raise ValueError(f"connector.llm_dim ({self.connector.llm_dim}) must equal llm.hidden ({self.llm.hidden})")
        if (self.vision.image_size, self.vision.patch_size) != (self.preprocessor.crop_size,
                                                                self.preprocessor.patch_size):
            raise ValueError("the ViT's image_size / patch_size must equal the preprocessor's crop_size / patch_size")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "MolmoConfig":
        """Inverse of ``to_dict`` (JSON lists back to tuples; unknown keys are an error, so typos do not pass)."""
        parts = {"preprocessor": PreprocessorConfig, "vision": VisionConfig, "connector": ConnectorConfig,
                 "llm": LLMConfig}
        kwargs = {}
        for key, value in saved.items():
            if key in parts:
                value = parts[key](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            kwargs[key] = value
        return cls(**kwargs)


MOLMO_PRESETS: dict[str, MolmoConfig] = {
    # CPU-sized: the tiny preprocessor, ViT (its CLIP head dropped), connector and LLM of chapters 01-04.
    "tiny": MolmoConfig(preprocessor=PREPROCESSOR_PRESETS["tiny"], vision=replace(VISION_PRESETS["tiny"], output_dim=None),
                        connector=CONNECTOR_PRESETS["tiny"], llm=LLM_PRESETS["tiny"]),
    # One GPU (bf16 autocast), trained from scratch: ~3x the tiny image resolution, ~30x its parameters.
    "small": MolmoConfig(preprocessor=PREPROCESSOR_PRESETS["small"], vision=VISION_PRESETS["small"],
                         connector=CONNECTOR_PRESETS["small"], llm=LLM_PRESETS["small"]),
    # The released geometries. MolmoLite.from_backbones(name) starts them as Molmo does, from the BACKBONES weights.
    "molmo-7b-d": MolmoConfig(tokenizer="allenai/Molmo-7B-D-0924"),
    "molmo-7b-o": MolmoConfig(connector=replace(CONNECTOR_PRESETS["molmo"], hidden_dim=11008, llm_dim=4096),
                              llm=LLM_PRESETS["olmo-7b"], tokenizer="allenai/Molmo-7B-O-0924"),
}


# Where the released models' parts start from (Molmo trains from these, chapter 05): an open_clip model name and
# pretrained tag, and a Hugging Face LLM repository. Downloaded by MolmoLite.from_backbones when online.
BACKBONES: dict[str, dict[str, str]] = {
    "molmo-7b-d": {"vision": "ViT-L-14-336/openai", "llm": "Qwen/Qwen2-7B"},
    "molmo-7b-o": {"vision": "ViT-L-14-336/openai", "llm": "allenai/OLMo-7B-1024-preview"},
}


def molmo_preset(name: str) -> MolmoConfig:
    """The named whole-model config; ValueError lists the known names."""
    try:
        return MOLMO_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(MOLMO_PRESETS)}") from None


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (chapters 08-09), Molmo's recipe as data (docs/molmo_recipe.md §7).

    stage: "caption" (stage 1: captions and transcripts) or "sft" (stage 2: the mixture).
    batch_size: sequences per micro-batch; grad_accum: micro-batches per optimizer step (the loss is normalised by the
    answer tokens of the whole global batch, as Molmo's). lr_* / warmup_*: per parameter group (connector = pooling,
    projector, pad embeddings and the new token rows; vit; llm); linear warmup, then cosine to final_lr_fraction.
    residual_dropout: on every block's output (Molmo's SFT); response_only: only at answer tokens (Molmo's stage 1
    "response_residual_dropout"). freeze: groups left untouched (an ablation: Molmo freezes nothing).
    packing_weights: the loss weight of packed annotations (Molmo: sqrt(1/N) in SFT, none in stage 1).
    data / curriculum: where the synthetic examples come from and how stage 2's pointing share moves from easy to
    crowded scenes (molmo_lite.train.stage_data).
    optimizer: "adamw" (Molmo) or "muon" (torch.optim.Muon for the weight matrices of every nn.Linear, AdamW for the
    rest: the oracle harness's o1, which lifted a tiny LLM's pointing from F1 0.15 to 0.50 in 10 minutes).
    rows: "packed" (Molmo: all of an image's annotations in one row) or "one" (one annotation per row, drawn at
    random, laid out as ``MolmoConfig.question_first`` says: the oracle harness's rows, o2 against o1).
    """

    stage: str = "caption"
    steps: int = 300
    batch_size: int = 16
    grad_accum: int = 1
    lr_connector: float = 2e-4
    lr_vit: float = 6e-6
    lr_llm: float = 2e-5
    warmup_connector: int = 200
    warmup_vit: int = 2000
    warmup_llm: int = 2000
    final_lr_fraction: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    residual_dropout: float = 0.0
    response_only: bool = False
    freeze: tuple[str, ...] = ()
    packing_weights: str | None = None  # "root_subsegments" / "none"; default: sqrt(1/N) in SFT, 1 in stage 1
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    examples: int = 4000  # synthetic training examples generated per dataset (tiny presets, data "pool")
    data: str = "pool"  # "pool": `examples` per dataset, drawn with replacement; "fresh": a new example at every draw
    sort_by_length: bool = False  # micro-batches of a step from its examples sorted by length (less padding)
    pack_examples: bool = False  # several examples per row, each attending to itself (data.collate.collate_packed)
    curriculum: str = "none"  # stage 2: a molmo_lite.train.CURRICULA name ("objects": one object first)
    rates: tuple[tuple[str, float], ...] = ()  # stage 2: ((source, rate), ...) set; the other sources fill the rest
    image_size: int = 56  # side of the synthetic scenes and clocks
    optimizer: str = "adamw"  # or "muon": Muon for the hidden matrices, AdamW for the rest (train.build_optimizer)
    rows: str = "packed"  # or "one": one annotation per row, the question first if the model says so

    def to_dict(self) -> dict:
        return asdict(self)


# The image path the pointing harness found (docs/recipes.md, e43-e54), as fields of ``pointing_only.EyesConfig``
# (``train.tiny_model(eyes=...)``): Molmo's single-crop mode with one token per 7 px patch, the shipped claim ViT
# (data_samples/backbones/vit_p7_claim2) whose cell head decides each patch in the connector, the projector started
# as a linear map. Its features beside the decisions: decision_features (e52-e55).
CLAIM_EYES: dict = {"patch_size": 7, "crop_mode": "resize", "pooling": (1, 1),
                    "vision_init": "data_samples/backbones/vit_p7_claim2", "cell_decisions": True,
                    "linear_projector": 0.35}

# The model `make run` trains (molmo_lite.train.tiny_model's arguments), recipe v18 of chapter 10's table: the
# pointing harness's image path (CLAIM_EYES) and an LLM from a random start, as the harnesses start it.
TINY_RUN_MODEL: dict = {"eyes": CLAIM_EYES, "lm": "random"}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The course's CPU run (`make run`): recipe "v2-fresh-lr" of benchmarks/recipes.py (chapter 10's table): a fresh
    # synthetic example at every draw, learning rates connector / ViT / LLM 1e-3 / 5e-5 / 1e-3 with 30-step warmups
    # (Molmo's order, connector >> ViT; a few hundred steps instead of tens of thousands), the steps that fit 11.5
    # minutes of this 2-core CPU. The tiny connector normalises the ViT features (ConnectorConfig.feature_norm).
    "tiny-caption": TrainConfig(stage="caption", steps=130, batch_size=16, lr_connector=1e-3, lr_vit=5e-5,
                                lr_llm=1e-3, warmup_connector=30, warmup_vit=30, warmup_llm=30, save_every=100,
                                examples=3000, data="fresh"),
    "tiny-sft": TrainConfig(stage="sft", steps=720, batch_size=16, lr_connector=1e-3, lr_vit=5e-5, lr_llm=1e-3,
                            warmup_connector=30, warmup_vit=30, warmup_llm=30, save_every=100, examples=3000,
                            data="fresh"),
    # `make run` (recipe v18 of benchmarks/recipes.py, on TINY_RUN_MODEL): the oracle harness's o16 in Molmo's two
    # stages. Muon for the hidden matrices, AdamW for the rest; one annotation per row, its question before the
    # image; a step's 16 rows sorted by length into two micro-batches; the ViT and the connector frozen (the claim
    # ViT's decisions are what the LLM binds to fastest, docs/recipes.md e48-e51); the LLM at 1e-3 after 50 steps,
    # annealed to a tenth. Stage 2 samples pointing and counting scenes at 60% and clocks at 15% instead of Molmo's
    # 35% and sqrt-rate share (the binding needs about 2,000 pointing steps), the rest of the mixture at its
    # sqrt rates in the 25% left. The steps are those that fit 16.8 minutes of this 2-core CPU.
    "course-caption": TrainConfig(stage="caption", steps=520, batch_size=8, grad_accum=2, lr_llm=1e-3,
                                  warmup_llm=50, optimizer="muon", rows="one", freeze=("vit", "connector"),
                                  sort_by_length=True, save_every=500, examples=3000, data="fresh"),
    "course-sft": TrainConfig(stage="sft", steps=3800, batch_size=8, grad_accum=2, lr_llm=1e-3, warmup_llm=50,
                              optimizer="muon", rows="one", freeze=("vit", "connector"), sort_by_length=True,
                              save_every=500, examples=3000, data="fresh",
                              rates=(("pointing", 0.6), ("clocks", 0.15))),
    # One GPU, the small preset from random weights (bf16 autocast on CUDA); synthetic images at 112 px.
    "small-caption": TrainConfig(stage="caption", steps=2000, batch_size=32, lr_connector=1e-3, lr_vit=1e-4,
                                 lr_llm=3e-4, warmup_connector=100, warmup_vit=200, warmup_llm=200, save_every=500,
                                 examples=20000, image_size=112),
    "small-sft": TrainConfig(stage="sft", steps=6000, batch_size=32, lr_connector=1e-3, lr_vit=5e-5, lr_llm=2e-4,
                             warmup_connector=100, warmup_vit=200, warmup_llm=200, save_every=500, examples=20000,
                             image_size=112),
    # Molmo's released recipe (global batch 128 / 256 at sequence length 2304, on many GPUs).
    "molmo-caption": TrainConfig(stage="caption", steps=22_000, batch_size=128),
    "molmo-sft": TrainConfig(stage="sft", steps=30_000, batch_size=256, lr_connector=5e-6, lr_vit=5e-6, lr_llm=1e-5,
                             warmup_connector=200, warmup_vit=200, warmup_llm=200, residual_dropout=0.1),
}

"""The application's arguments: one pydantic model, validated before anything loads.

Every file in `configs/` is a Ray Serve config whose `applications[].args` is an
`AppConfig`. A bad config fails at startup with the field path in the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.environment import (
    JOB_STORE_URL_ENV,
    KEY_DATABASE_URL_ENV,
    KEY_PEPPER_ENV,
    REDIS_URL_ENV,
    S3_CREDENTIALS_ENV,
    SIGNING_SECRET_ENV,
    WEBHOOK_SECRETS_ENV,
)
from serve_app.families import FAMILIES, FAMILY_NAMES, Batching, FamilyTraits, Task

RESERVED_DEPLOYMENT_NAMES = {"Gateway", "PromptTemplater", "JobRunner"}
SIZE_PATTERN = re.compile(r"^(\d{2,5})x(\d{2,5})$")


def parse_size(size: str) -> tuple[int, int]:
    """'768x512' -> (768, 512): width first, as the OpenAI API writes it."""
    match = SIZE_PATTERN.fullmatch(size)
    if not match:
        raise ValueError(f"size must look like '1024x1024', got {size!r}")
    return int(match.group(1)), int(match.group(2))


def without_password(url: str | None, variable: str) -> str | None:
    """Ray Serve logs an application's args, so a URL there may not carry a password:
    the whole URL goes in the environment variable that overrides the field."""
    if url and urlsplit(url).password:
        raise ValueError(
            f"this URL carries a password, and Serve logs the config: set ${variable} to "
            "the whole URL instead (it overrides this field), and leave the password out here"
        )
    return url


# Values that can only be secrets: webhook secrets and this service's API keys.
SECRET_LOOKING = re.compile(r"^(whsec_|sk-[A-Za-z0-9]{12}-)")


def refuse_secret_fields(data: Any, instead: dict[str, str]) -> Any:
    """Serve logs an application's args, so secrets never come from them: each field in
    `instead` is refused with where its value goes (an environment variable)."""
    if isinstance(data, dict):
        for field, where in instead.items():
            if field in data:
                raise ValueError(
                    f"{field} is not read from the config (Serve logs it): {where}; "
                    "README, Deploy checklist"
                )
    return data


def find_secret_looking(value: Any, path: str = "") -> str | None:
    """The path of the first string in `value` that looks like a secret, if any."""
    if isinstance(value, str):
        return path or "args" if SECRET_LOOKING.match(value) else None
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = find_secret_looking(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


class StrictModel(BaseModel):
    # A refused value is not echoed in the error: it may be a secret (and errors are logged).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ModelDefaults(StrictModel):
    size: str = "1024x1024"
    steps: int = Field(30, ge=1)
    guidance_scale: float = Field(5.0, ge=0)
    negative_prompt: str | None = None
    # InstructPix2Pix only: how closely the edit keeps to the input image.
    image_guidance_scale: float | None = Field(None, ge=0)

    @field_validator("size")
    @classmethod
    def _valid_size(cls, value: str) -> str:
        parse_size(value)
        return value


class ModelLimits(StrictModel):
    max_n: int = Field(4, ge=1, le=10)
    min_side: int = Field(64, ge=8)
    max_side: int = Field(2048, ge=8)
    max_pixels: int = Field(2048 * 2048, ge=64)
    max_steps: int = Field(50, ge=1)
    max_guidance_scale: float = Field(20.0, ge=0)
    max_prompt_chars: int = Field(4000, ge=1)


class BatchingConfig(StrictModel):
    """What one pipeline call may hold, and whether an idle model waits for company.

    A call holds at most `max_batch_size` images (a request for n images weighs n) and
    at most `max_batch_work` default images of work, where a request weighs
    n x width x height x steps over the model's default size and steps: one 1024x1024
    request fills the work of four 512x512 ones.
    """

    max_batch_size: int = Field(4, ge=1, le=64)
    # None: max_batch_size default images.
    max_batch_work: float | None = Field(None, gt=0, le=1024)
    # A request that finds the model idle waits this long for others to share its call
    # (0: it starts at once). While a call runs, arrivals gather for the next regardless.
    idle_wait_s: float = Field(0.0, ge=0, le=5)
    # Whether requests may share a pipeline call. Unset: as the family says. `false` makes
    # every request run alone; `true` is for the generic `diffusers` families only, where
    # the operator vouches that the checkpoint's pipeline batches prompts independently.
    shared_calls: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_wait_timeout_s" in data:
            raise ValueError(
                "batching.batch_wait_timeout_s is gone: a request that finds the model idle "
                "now starts at once, and arrivals during a call share the next one; set "
                "batching.idle_wait_s to make an idle model wait for company"
            )
        return data

    def work_budget(self) -> float:
        return self.max_batch_work if self.max_batch_work is not None else self.max_batch_size


class WarmupConfig(StrictModel):
    """Pipeline calls a replica makes before it takes traffic, so that no request pays for
    lazy initialisation, kernel autotuning or (with `compile: true`) compilation."""

    # Each size at each batch size (images per call). Empty: defaults.size only.
    sizes: list[str] = []
    # Empty: [1], plus max_batch_size when the model is compiled: after two batch sizes
    # torch.compile makes the batch dimension dynamic, so the sizes between reuse that
    # graph instead of compiling under traffic.
    batch_sizes: list[int] = Field(default_factory=list)
    # No new warm-up call starts after this many seconds; the replica then serves.
    max_s: float = Field(300, gt=0)

    @field_validator("sizes")
    @classmethod
    def _valid_sizes(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_size(value)
        return values

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(value < 1 for value in values):
            raise ValueError("batch sizes must be at least 1")
        return values


class PreviewConfig(StrictModel):
    """Partial images (`stream: true` with `partial_images`, and job events with previews)."""

    # Previews are decoded at this fraction of the final width and height.
    scale: float = Field(0.5, ge=0.125, le=1.0)
    # A small preview decoder (a diffusers AutoencoderTiny folder or hub id, e.g. TAESD for
    # the family's latents); unset: the model's own VAE. `tiny`: a random-weight one built
    # offline, for tests.
    decoder: str | None = None


class ChatDefaults(StrictModel):
    """Sampling when a chat request does not say."""

    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    # Models that think aloud (GLM-4.6V) do so unless the request turns it off; a
    # structured answer (response_format json) never thinks first.
    thinking: bool = True


class ChatLimits(StrictModel):
    """What one chat request may ask of a vision-chat model; a request over any is a 4xx
    naming it."""

    max_images: int = Field(4, ge=0, le=64)
    # Each image is scaled down (aspect kept) to the pixel budget its `detail` asks for.
    max_image_pixels: int = Field(1280 * 28 * 28, ge=28 * 28)
    low_detail_pixels: int = Field(256 * 28 * 28, ge=28 * 28)
    # Text and image tokens of the rendered conversation.
    max_prompt_tokens: int = Field(8192, ge=16)
    max_output_tokens: int = Field(4096, ge=1)
    max_n: int = Field(4, ge=1, le=16)
    max_stop_sequences: int = Field(4, ge=0, le=16)
    max_messages: int = Field(64, ge=1, le=1024)
    max_text_chars: int = Field(32000, ge=1)


class ChatConfig(StrictModel):
    """Vision-chat models only."""

    defaults: ChatDefaults = ChatDefaults()
    limits: ChatLimits = ChatLimits()

    @model_validator(mode="after")
    def _consistent(self) -> ChatConfig:
        if self.defaults.max_tokens > self.limits.max_output_tokens:
            raise ValueError("defaults.max_tokens exceeds limits.max_output_tokens")
        if self.limits.low_detail_pixels > self.limits.max_image_pixels:
            raise ValueError("limits.low_detail_pixels exceeds limits.max_image_pixels")
        return self


class CustomWeights(StrictModel):
    """A `.safetensors` state dict loaded into one pipeline component."""

    path: str
    component: str = "transformer"
    # Refuse to serve when keys are missing or do not fit, instead of only reporting them.
    strict: bool = False


class AdapterLimits(StrictModel):
    """Per-request LoRA adapters on one model (families whose `supports_adapters` is set)."""

    # Adapters a replica keeps loaded; the least recently used goes first (its weights
    # freed) when another is needed.
    max_loaded: int = Field(4, ge=1, le=64)
    # Adapters one request may combine.
    max_per_request: int = Field(3, ge=1, le=8)
    # A request's scale for an adapter lies within +-max_scale.
    max_scale: float = Field(2.0, gt=0, le=10)
    # With `compile: true`: adapters take turns in one slot over every Linear layer of the
    # denoiser, padded to this rank (at least the highest rank among the model's LoRAs)
    # and swapped in place, so the compiled denoiser is never recompiled. One adapter per
    # request then (max_per_request: 1); a compiled model with LoRAs must set it.
    hotswap_rank: int | None = Field(None, ge=1, le=1024)


class LoraConfig(StrictModel):
    """One adapter of the LoRA catalog (`loras:` at the top level), chosen per request."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # A folder, a `.safetensors` file, a hub id, or `tiny:<seed>` for a random rank-4
    # adapter built on first use (tests and the embedded default).
    path: str = Field(min_length=1)
    # The weights file inside a folder or hub repository, where it holds more than one.
    weight_name: str | None = None
    # The models it was trained for (a LoRA fits one base model's layers); names this
    # config does not serve are skipped.
    models: list[str] = Field(min_length=1)
    description: str = ""


# The family table's names, so a typo is refused with the list of valid ones.
Family = Literal[FAMILY_NAMES]  # type: ignore[valid-type]


class ModelConfig(StrictModel):
    """One model = one deployment. For edit models `defaults.size` sets the working area:
    input images are scaled, aspect kept, to about that many pixels."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # Follows from the family; stating it only guards against a mismatch.
    task: Task | None = None
    family: Family
    # A folder, a hub id, or `tiny:<family>` for a random-weight model built offline.
    path: str
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    offload: Literal["none", "model", "sequential"] = "none"
    compile: bool = False
    # torch.compile's backend: "inductor" generates kernels; "eager" only captures graphs
    # (the tests' way to see what would recompile without compiling kernels).
    compile_backend: str = Field("inductor", pattern=r"^[a-z_]{1,32}$")
    description: str = ""
    defaults: ModelDefaults = ModelDefaults()
    limits: ModelLimits = ModelLimits()
    batching: BatchingConfig = BatchingConfig()
    warmup: WarmupConfig = WarmupConfig()
    previews: PreviewConfig = PreviewConfig()
    custom_weights: CustomWeights | None = None
    # Answer an exact repeat of a seeded request from the result cache (`result_cache:`
    # at the top level says where and for how long); image models only.
    result_cache: bool = False
    # Per-request LoRA adapters from the catalog: how many a replica keeps, and asks.
    adapters: AdapterLimits = AdapterLimits()
    # Vision-chat models: sampling defaults and per-request limits. A vision-chat model's
    # `batching.max_batch_size` counts conversations (rows) in one `generate` call.
    chat: ChatConfig = ChatConfig()

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_DEPLOYMENT_NAMES:
            raise ValueError(f"{value!r} is the name of a built-in deployment")
        return value

    @model_validator(mode="before")
    @classmethod
    def _task_from_family(cls, data):
        if isinstance(data, dict) and data.get("family") in FAMILIES:
            task = FAMILIES[data["family"]].task
            if data.get("task", task) != task:
                raise ValueError(f"family {data['family']!r} serves task {task.value!r}")
            data = {**data, "task": task}
        return data

    @property
    def traits(self) -> FamilyTraits:
        return FAMILIES[self.family]

    @property
    def batching_mode(self) -> Batching:
        """How this model's requests share pipeline calls: the family's way, unless the
        config says otherwise (batching.shared_calls)."""
        declared = self.batching.shared_calls
        if declared is None:
            return self.traits.batching
        return Batching.SHARED if declared else Batching.PER_REQUEST

    @property
    def hot_swaps_adapters(self) -> bool:
        """Compiled with a LoRA slot: adapters are swapped into it in place, one at a time."""
        return self.compile and self.adapters.hotswap_rank is not None

    @property
    def adapters_held(self) -> int:
        """LoRA adapters a replica holds at once."""
        return 1 if self.hot_swaps_adapters else self.adapters.max_loaded

    def warmup_shapes(self) -> list[tuple[int, int, int]]:
        """(width, height, images per call) of each warm-up call, in order."""
        sizes = self.warmup.sizes or [self.defaults.size]
        batches = self.warmup.batch_sizes or (
            [1, self.batching.max_batch_size] if self.compile else [1]
        )
        shapes = []
        for size in sizes:
            width, height = parse_size(size)
            for batch in dict.fromkeys(batches):
                shapes.append((width, height, batch))
        return shapes

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        traits = self.traits
        if (
            self.batching.shared_calls
            and traits.batching is Batching.PER_REQUEST
            and not traits.batching_declarable
        ):
            raise ValueError(
                f"batching.shared_calls: family {self.family!r} cannot share pipeline calls "
                "(its images would depend on their neighbours); remove the setting"
            )
        if self.hot_swaps_adapters and self.adapters.max_per_request != 1:
            raise ValueError(
                f"model {self.name!r}: compile: true hot-swaps one LoRA adapter at a time; "
                "set adapters.max_per_request: 1"
            )
        if self.result_cache and self.task is Task.VISION_CHAT:
            raise ValueError("result_cache is for image models; a vision-chat model has none")
        if self.task is Task.VISION_CHAT:
            if self.chat.limits.max_n > self.batching.max_batch_size:
                raise ValueError(
                    f"chat.limits.max_n ({self.chat.limits.max_n}) must not exceed "
                    f"batching.max_batch_size ({self.batching.max_batch_size})"
                )
            if self.chat.limits.max_images > self.traits.max_input_images:
                raise ValueError(
                    f"chat.limits.max_images exceeds the {self.traits.max_input_images} "
                    f"images family {self.family!r} takes"
                )
        elif self.limits.max_n > self.batching.max_batch_size:
            # A request's n images come from one pipeline call, within the batch cap.
            raise ValueError(
                f"limits.max_n ({self.limits.max_n}) must not exceed "
                f"batching.max_batch_size ({self.batching.max_batch_size})"
            )
        width, height = parse_size(self.defaults.size)
        limits = self.limits
        if not (limits.min_side <= min(width, height) and max(width, height) <= limits.max_side):
            raise ValueError(f"defaults.size {self.defaults.size} is outside the model's limits")
        if width * height > limits.max_pixels:
            raise ValueError(f"defaults.size {self.defaults.size} exceeds limits.max_pixels")
        for size in self.warmup.sizes:
            w, h = parse_size(size)
            if max(w, h) > limits.max_side or w * h > limits.max_pixels:
                raise ValueError(f"warmup size {size} exceeds the model's limits")
        if any(b > self.batching.max_batch_size for b in self.warmup.batch_sizes):
            raise ValueError("warmup.batch_sizes must not exceed batching.max_batch_size")
        if self.defaults.steps > limits.max_steps:
            raise ValueError("defaults.steps exceeds limits.max_steps")
        if self.path.startswith("tiny:") and self.path != f"tiny:{self.family}":
            raise ValueError(f"path {self.path!r} does not match family {self.family!r}")
        return self


class S3Config(StrictModel):
    """Any S3-compatible store, through boto3. Credentials come from boto3's standard chain
    only (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, shared files, instance or pod role),
    never from the config, which Serve logs."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    # Prepended to every key, e.g. "images/prod/"; folder names only, ending in "/".
    prefix: str = Field("", pattern=r"^([A-Za-z0-9_-]+/)*$")
    # Unset: AWS itself. Set for MinIO, Ceph, R2 and the like; presigned URLs point here too.
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s/?#]+/?$")
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,32}$")
    # "path" for most self-hosted stores; "virtual" is what AWS prefers.
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    # Bounded so a dead store fails a request in seconds, not minutes.
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    # boto's "standard" retry mode; attempts count the first try (botocore's total_max_attempts).
    max_attempts: int = Field(3, ge=1, le=10)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        variables = " and ".join(f"${name}" for name in S3_CREDENTIALS_ENV)
        where = f"set {variables} (or use a shared credentials file or the node's role)"
        return refuse_secret_fields(data, {"access_key_id": where, "secret_access_key": where})


class StorageConfig(StrictModel):
    kind: Literal["local", "s3"] = "local"
    # local: the folder; every Gateway replica must see the same one.
    root: str = "./data/images"
    # local: /files URLs are signed with $IMAGE_SERVICE_SIGNING_SECRET, else a random key
    # kept in <root>/.signing_key, shared by every replica that sees the folder.
    # How long a returned URL works: signed /files URLs, or S3 presigned URLs.
    url_ttl_s: int = Field(3600, ge=10, le=7 * 24 * 3600)
    # local: absolute base for returned URLs (e.g. https://images.example.com); else the
    # request's.
    public_base_url: str | None = None
    s3: S3Config | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_signing_secret(cls, data: Any) -> Any:
        return refuse_secret_fields(
            data, {"signing_secret": f"set ${SIGNING_SECRET_ENV} (16+ bytes)"}
        )

    @model_validator(mode="after")
    def _backend_settings(self) -> StorageConfig:
        if self.kind == "s3" and self.s3 is None:
            raise ValueError("kind 's3' needs an s3 block with at least a bucket")
        if self.kind == "local" and self.s3 is not None:
            raise ValueError("an s3 block is set but kind is 'local'; set kind: s3 or drop it")
        return self


class GatewayConfig(StrictModel):
    max_request_bytes: int = Field(1 << 20, ge=1024)
    # Bodies that carry images (edits): uploads or base64/data URLs.
    max_upload_bytes: int = Field(64 << 20, ge=1024)
    # How long the Gateway waits for a model before answering 503.
    model_timeout_s: float = Field(600, gt=0)
    # The whole request inside the Gateway (auth, limits, model, encoding) before a 504.
    # Keep it below Serve's `http_options.request_timeout_s`, whose 408 has no envelope.
    request_timeout_s: float = Field(660, gt=0)
    # Per route prefix ("/v1/models": 10): the longest matching prefix wins.
    route_timeouts_s: dict[str, float] = Field(default_factory=dict)
    # A request a model refuses for capacity waits in line this long, first come first
    # served, before its 503 (0: the refusal is answered at once).
    overload_wait_s: float = Field(0, ge=0)

    @model_validator(mode="after")
    def _line_within_model_timeout(self) -> GatewayConfig:
        if self.overload_wait_s >= self.model_timeout_s:
            raise ValueError(
                f"overload_wait_s={self.overload_wait_s:g} must be below model_timeout_s="
                f"{self.model_timeout_s:g}: a request waiting in line would time out first"
            )
        return self

    @field_validator("route_timeouts_s")
    @classmethod
    def _positive_prefixes(cls, value: dict[str, float]) -> dict[str, float]:
        for prefix, seconds in value.items():
            if not prefix.startswith("/") or seconds <= 0:
                raise ValueError(f"{prefix!r}: a path prefix starting with '/' and seconds > 0")
        return value

    def timeout_for(self, path: str) -> float:
        matches = [
            p for p in self.route_timeouts_s if path == p or path.startswith(p.rstrip("/") + "/")
        ]
        return self.route_timeouts_s[max(matches, key=len)] if matches else self.request_timeout_s


KEY_DATABASE_SCHEMES = ("sqlite:///", "postgresql+psycopg://")


class AuthConfig(StrictModel):
    """API keys. The key pepper (HMAC secret) comes only from the environment variable
    named here, never from this file."""

    enabled: bool = True
    # With keys off, only requests that reach the proxy on a loopback address are
    # served, and the Gateway refuses to start when the proxy binds anything else.
    allow_anonymous_on_loopback: bool = False
    # SQLite for one machine; PostgreSQL (postgresql+psycopg://...) for several nodes.
    # $IMAGE_SERVICE_KEY_DATABASE_URL overrides it, so a password stays out of YAML.
    database_url: str = "sqlite:///./data/keys.db"
    pepper_env: str = Field(KEY_PEPPER_ENV, pattern=r"^[A-Z_][A-Z0-9_]*$")
    # How long a replica trusts a key it has checked: revocation takes this long at most.
    cache_ttl_s: float = Field(5.0, ge=0, le=300)
    # `last_used_at` is written at most this often per key and replica.
    last_used_every_s: float = Field(60.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(KEY_DATABASE_SCHEMES):
            raise ValueError(f"database_url must start with one of {KEY_DATABASE_SCHEMES}")
        return without_password(value, KEY_DATABASE_URL_ENV)

    @model_validator(mode="after")
    def _anonymous_is_explicit(self) -> AuthConfig:
        if not self.enabled and not self.allow_anonymous_on_loopback:
            raise ValueError(
                "enabled: false needs allow_anonymous_on_loopback: true "
                "(anonymous access is only ever served on 127.0.0.1/localhost)"
            )
        return self


class TenantLimits(StrictModel):
    requests_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)


class RateLimitConfig(StrictModel):
    """Per-tenant quotas, shared by every Gateway replica through Redis when set."""

    enabled: bool = True
    # redis://host:port/db; unset: counted in each replica's memory (one replica only).
    # $IMAGE_SERVICE_REDIS_URL overrides it, so a password stays out of YAML.
    redis_url: str | None = None
    requests_per_minute: int = Field(600, ge=1)
    # In-flight requests per tenant; a slot expires on its own after the route's timeout,
    # so a crashed replica's slots free themselves.
    max_concurrent: int = Field(32, ge=1)
    # Optional second bucket per API key, inside the tenant's.
    per_key_requests_per_minute: int | None = Field(None, ge=1)
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)
    # Redis unreachable: "allow" serves unlimited (availability first), "deny" answers 503.
    on_backend_error: Literal["allow", "deny"] = "allow"
    redis_timeout_s: float = Field(0.5, gt=0, le=10)
    key_prefix: str = Field("image-service:limits", min_length=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_without_password(cls, value: str | None) -> str | None:
        return without_password(value, REDIS_URL_ENV)

    def limits_for(self, tenant: str) -> tuple[int, int]:
        """(requests per minute, max concurrent) for this tenant."""
        override = self.tenants.get(tenant, TenantLimits())
        return (
            override.requests_per_minute or self.requests_per_minute,
            override.max_concurrent or self.max_concurrent,
        )


ORIGIN_PATTERN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


class CorsConfig(StrictModel):
    """Browsers' cross-origin access: exact origins only; none by default."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_credentials: bool = False
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "DELETE"])
    allow_headers: list[str] = Field(
        default_factory=lambda: [
            "authorization",
            "content-type",
            "x-api-key",
            "idempotency-key",
            "x-request-id",
        ]
    )
    max_age_s: int = Field(600, ge=0, le=86400)

    @field_validator("allow_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not ORIGIN_PATTERN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return origins

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_origins '*' cannot be combined with allow_credentials")
        return self


class FetchConfig(StrictModel):
    """Image URLs in requests: only public https hosts, unless listed here."""

    # Plain http for every host, listed or not; off in production.
    allow_http: bool = False
    # "host", "host:port" or "[v6]:port", matched exactly: exempt from the public-address
    # rule (internal image stores). No wildcards or ranges, on purpose.
    allowed_hosts: list[str] = Field(default_factory=list)
    # For internal hosts with a private CA; the system trust store otherwise.
    ca_file: str | None = None
    # The whole fetch, redirects included.
    timeout_s: float = Field(10.0, gt=0, le=120)
    max_redirects: int = Field(3, ge=0, le=3)


class ImageInputConfig(StrictModel):
    """Limits on every image a request brings (upload, base64, data URL or URL)."""

    max_bytes: int = Field(20 << 20, ge=1024)
    # Checked from the file header, before any pixel is decoded.
    max_pixels: int = Field(40_000_000, ge=64 * 64)
    max_side: int = Field(10_000, ge=64)
    # A JPEG's EXIF cannot exceed 64 KiB; larger blocks elsewhere are refused.
    max_exif_bytes: int = Field(64 << 10, ge=0)
    fetch: FetchConfig = FetchConfig()


class WebhookConfig(StrictModel):
    """Signed callbacks (Standard Webhooks) for jobs and batches. The secrets are
    $IMAGE_SERVICE_WEBHOOK_SECRETS (`whsec_<base64>`, space-separated, more than one while
    rotating: each delivery is signed with all); with none, webhooks are off."""

    # False: callbacks are refused even where the secrets are set.
    enabled: bool = True
    # Callback URLs pass the same SSRF rules as image URLs; these exempt exact hosts.
    allow_http: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    timeout_s: float = Field(10.0, gt=0, le=60)
    # Delay before each retry; the delivery fails for good after the last one. Jittered.
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000], min_length=1
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        where = f"set ${WEBHOOK_SECRETS_ENV} (space-separated whsec_... values)"
        return refuse_secret_fields(data, {"secrets": where})


class JobsConfig(StrictModel):
    """Durable jobs: the store, the JobRunner's leases and the webhooks it sends."""

    # SQLAlchemy URL: sqlite:///<path> (embedded; a relative path is relative to the
    # working directory) or postgresql+psycopg://user@host/db for several nodes.
    # $IMAGE_SERVICE_JOB_STORE_URL overrides it, so passwords stay out of YAML.
    store_url: str = "sqlite:///data/jobs.sqlite3"
    # A running job whose worker stops heartbeating for this long is re-queued.
    lease_s: float = Field(30.0, ge=1, le=3600)
    # A job whose worker was lost this many times ends failed instead of running again.
    max_attempts: int = Field(3, ge=1, le=20)
    # Lost model replicas a job may meet without spending an attempt (README, Jobs).
    max_replica_losses: int = Field(5, ge=0, le=100)
    # Image-store outages (storage_unavailable) a job may meet without spending an
    # attempt: with the retry backoff (2, 4 ... 60 s) the default rides out ~15 minutes.
    max_storage_outages: int = Field(20, ge=0, le=1000)
    # Jobs one JobRunner replica runs at once (they share the models' batches).
    runner_concurrency: int = Field(16, ge=1, le=1024)
    poll_interval_s: float = Field(0.5, gt=0, le=60)
    sweep_interval_s: float = Field(5.0, gt=0, le=600)
    max_batch_jobs: int = Field(1000, ge=1, le=100_000)
    # A second request with an Idempotency-Key still being created gets 409 for this long;
    # after it, the creator is presumed dead and the key may be taken over.
    idempotency_lock_s: float = Field(30.0, ge=1, le=3600)
    # How long a key remembers its job (a client may retry for this long).
    idempotency_ttl_s: float = Field(86400.0, ge=86400)
    # GET /v1/jobs/{id}/events: how often an open stream looks for news, and how long one
    # connection lasts before the client reconnects with Last-Event-ID (EventSource does
    # it by itself); kept below the Gateway's request deadline.
    events_poll_s: float = Field(0.25, gt=0, le=10)
    event_stream_s: float = Field(300.0, ge=1, le=3600)
    # A preview event is kept this long, so a stream a poll behind still gets the last
    # ones of a job that just ended; then it goes (the final images replace it).
    preview_keep_s: float = Field(60.0, ge=1, le=86400)
    webhooks: WebhookConfig = WebhookConfig()

    @field_validator("store_url")
    @classmethod
    def _store_url_without_password(cls, value: str) -> str:
        return without_password(value, JOB_STORE_URL_ENV)


class ObservabilityConfig(StrictModel):
    # One structured line per Gateway request in the Gateway replica's Serve log.
    access_log: bool = True
    # Leading prompt characters kept in the access log; 0 keeps none.
    access_log_prompt_chars: int = Field(80, ge=0, le=1000)


class ConsoleConfig(StrictModel):
    """The browser console at /console: off unless asked for (configs/local.yaml asks)."""

    enabled: bool = False


class ResultCacheConfig(StrictModel):
    """Images of seeded requests kept for an exact repeat, for the models that opt in
    (`result_cache: true` on the model). Shared by every replica through the Redis that
    rate limits name (`rate_limits.redis_url` or $IMAGE_SERVICE_REDIS_URL), else kept in
    each replica's memory. Entries go oldest first past `max_bytes`, and after `ttl_s`."""

    ttl_s: float = Field(86_400.0, gt=0, le=30 * 86_400)
    max_bytes: int = Field(256 << 20, ge=1 << 20)
    # A result bigger than this (its encoded images together) is not kept.
    max_entry_bytes: int = Field(16 << 20, ge=1 << 10)
    # Off: a tenant is only ever answered from its own requests' results.
    across_tenants: bool = False
    key_prefix: str = Field("image-service:results", min_length=1)


class AppConfig(StrictModel):
    models: list[ModelConfig] = Field(min_length=1)
    templates_path: str = "configs/templates.yaml"
    tiny_model_cache: str = "~/.cache/image-serving/tiny"
    storage: StorageConfig = StorageConfig()
    gateway: GatewayConfig = GatewayConfig()
    images: ImageInputConfig = ImageInputConfig()
    jobs: JobsConfig = JobsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    auth: AuthConfig = AuthConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    result_cache: ResultCacheConfig = ResultCacheConfig()
    # The LoRA catalog: adapters a request may name in `loras`, each for its models.
    loras: list[LoraConfig] = []
    cors: CorsConfig = CorsConfig()
    console: ConsoleConfig = ConsoleConfig()

    @model_validator(mode="before")
    @classmethod
    def _no_secret_values(cls, data: Any) -> Any:
        path = find_secret_looking(data)
        if path:
            raise ValueError(
                f"{path} looks like a secret (a webhook secret or an API key), and Serve logs "
                "the config: secrets come from environment variables (README, Deploy "
                "checklist)"
            )
        return data

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        return models

    @model_validator(mode="after")
    def _loras_fit_their_models(self) -> AppConfig:
        names = [lora.name for lora in self.loras]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"LoRA names must be unique: {duplicates}")
        for lora in self.loras:
            for name in lora.models:
                model = self.model(name)
                # A model not served here is skipped: one catalog serves configs that run
                # a subset of the models (a benchmark, a node pool of its own).
                if model is not None and not model.traits.supports_adapters:
                    raise ValueError(
                        f"LoRA {lora.name!r} names model {name!r}, whose family "
                        f"{model.family!r} takes no per-request adapters"
                    )
                if model is not None and model.compile and not model.hot_swaps_adapters:
                    raise ValueError(
                        f"LoRA {lora.name!r} names model {name!r}, which is compiled: set its "
                        "adapters.hotswap_rank (the highest rank among its LoRAs) so adapters "
                        "swap in place instead of recompiling it"
                    )
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def lora(self, name: str) -> LoraConfig | None:
        return next((lora for lora in self.loras if lora.name == name), None)

    def loras_for(self, model: str) -> list[LoraConfig]:
        return [lora for lora in self.loras if model in lora.models]

    def resolve_path(self, path: str) -> Path:
        """Relative paths in the config are relative to the working directory."""
        return Path(path).expanduser().resolve()

    def with_absolute_store_path(self) -> AppConfig:
        """A relative SQLite path made absolute here, so that every replica, whatever its
        working directory, opens the same file."""
        prefix = "sqlite:///"
        url = self.jobs.store_url
        if not url.startswith(prefix) or url[len(prefix) :].startswith("/"):
            return self
        path = self.resolve_path(url[len(prefix) :])
        jobs = self.jobs.model_copy(update={"store_url": f"{prefix}{path}"})
        return self.model_copy(update={"jobs": jobs})

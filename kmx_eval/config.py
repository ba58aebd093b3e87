"""The typed schema of ``params.yaml``.

The ``resolve`` stage, first in every ``dvc repro``, validates the whole file with every registry
(:mod:`kmx_eval.validation`), so a wrong key, type or name fails at once with one message that
names the key and the valid values (:func:`format_validation_error`), never after minutes of work.
Every other stage validates the whole file's structure again and checks the names it uses.

Names that live in registries (dataset ``source``, backbone ``architecture``, explainers, Quantus
metrics) are checked against those registries, passed in the validation context, so a new
implementation needs no schema change and the schema imports none of them.
Each dataset source declares its own config model (a subclass of :class:`DatasetConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from kmx_eval.numerics import DEFAULT_MODE as DEFAULT_NUMERICS
from kmx_eval.errors import ParamsError, did_you_mean
from kmx_eval.schema import BackboneOverride, DatasetConfig, Strict, check_seed
from kmx_eval.models.combination import Combination, check_combination_name, parse_combination


def _registry(info: ValidationInfo, kind: str):
    """The registry ``kind`` passed in the validation context (see :func:`parse_params`), or None.

    The schema names registries without importing them: a stage validates with the registries it
    uses, and the ``resolve`` stage (:mod:`kmx_eval.validation`) with all of them, before any work.
    """
    return (info.context or {}).get(kind)


class BackboneConfig(Strict):
    """The CNN under explanation and how it is trained (``train`` stage).

    ``checkpoint`` is the user's own trained model (a state dict of ``architecture`` with the
    dataset's number of classes, safetensors or a ``weights_only`` PyTorch file); with
    ``epochs: 0`` it is explained as it is, with ``epochs > 0`` it is the start of fine-tuning.
    """

    architecture: str = "resnet34"
    weights: Literal["none", "imagenet"] = "none"
    checkpoint: str | None = None
    image_size: int = Field(96, ge=1)
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    augment: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Training's weight gradients are float sums split per thread, so the trained model's bytes
    # depend on the thread count: a fixed count (not the machine's core count) keeps a committed
    # baseline reproducible on another machine. null: torch's default (every core).
    threads: int | None = Field(2, ge=1)
    num_workers: int = Field(0, ge=0)
    mixed_precision: bool = False
    # CPU kernels (kmx_eval/numerics.py): portable pins every library to AVX2, so the same params
    # give the same bytes on any x86-64 CPU with AVX2; native takes this CPU's fastest kernels.
    # One value for the whole study (a process's kernels are chosen once): no per-dataset override.
    numerics: Literal["native", "portable"] = DEFAULT_NUMERICS  # also read before validation

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str, info: ValidationInfo) -> str:
        architectures = _registry(info, "architectures")
        if architectures is not None:
            architectures.get(v, where="backbone.architecture")
        return v

    @field_validator("image_size")
    @classmethod
    def _large_enough(cls, v: int, info: ValidationInfo) -> int:
        # The floor is the architecture's deepest stride (a smaller image leaves that block no
        # grid cell), read from its description where the architectures registry is given.
        architectures = _registry(info, "architectures")
        name = info.data.get("architecture")  # absent when the architecture itself is wrong
        if architectures is None or name not in architectures:
            return v
        arch = architectures.get(name)
        least = arch.min_image_size
        if v < least:
            raise ValueError(
                f"{v} px is too small for {arch.name}: its deepest block B{arch.n_blocks} has stride "
                f"{least}, so images need at least {least} px ({3 * least} or more gives it a grid "
                f"worth explaining)"
            )
        return v

    @field_validator("checkpoint")
    @classmethod
    def _one_source_of_weights(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("weights", "none") != "none":
            raise ValueError(f"a checkpoint and weights {info.data['weights']!r} both say where the "
                             f"weights come from; set weights: none with a checkpoint")
        return v


class FeaturesConfig(Strict):
    """How F_S is built from the blocks (docs/METHOD.md, section 1)."""

    normalisation: Literal["none", "l2", "standardize"] = "standardize"
    resize: Literal["bilinear", "nearest"] = "bilinear"
    #: How much each block weighs in F_S for combinations written without a suffix (B234);
    #: B234_balanced / B234_channels choose per combination (docs/METHOD.md, section 6).
    block_weighting: Literal["channels", "balanced"] = "channels"
    batch_size: int = Field(128, ge=1)


class HeadConfig(Strict):
    """The k-means head (KMEx) and the linear probe (``fit`` stage)."""

    n_prototypes: int = Field(5, ge=1)
    labels: Literal["ground_truth", "cnn"] = "ground_truth"
    n_init: int = Field(4, ge=1)
    max_iter: int = Field(300, ge=1)
    probe_C: float = Field(1.0, gt=0)
    probe_max_iter: int = Field(2000, ge=1)
    #: Also fit KMEx's own head (raw pooled embeddings of the deepest block, scikit-learn KMeans with
    #: KMEx's 10 restarts, ground-truth labels) in the deepest-block combination's fit stage: the
    #: ``kmeans_kmex`` reference row (kmx_eval/heads/kmex.py, docs/METHOD.md section 4).
    kmex_reference: bool = True


class ConceptsConfig(Strict):
    """Concept maps: MiniBatchKMeans on per-location vectors of F_S."""

    n_concepts: int = Field(8, ge=2)
    #: One concept model per scope listed: global (shared by all classes) and/or class (per class).
    scope: list[Literal["global", "class"]] = ["global", "class"]
    n_images: int = Field(256, ge=1)
    locations_per_image: int = Field(32, ge=1)
    batch_size: int = Field(2048, ge=16)

    @field_validator("scope", mode="before")
    @classmethod
    def _scope_list(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and (not v or len(set(map(str, v))) != len(v)):
            raise ValueError("needs global, class or both, each at most once, such as [global, class]")
        return v


class ExplainConfig(Strict):
    """Explanation maps on a fixed, seeded evaluation subset of the test split."""

    n_images: int = Field(48, ge=2)
    explainers: list[str] = ["margin", "margin_centred", "distance", "cam", "gradcam",
                             "integrated_gradients", "random", "random_grid"]
    ig_steps: int = Field(16, ge=2)
    batch_size: int = Field(32, ge=1)
    #: The explained class: the model's own prediction (the method explains the decision) or the label.
    target: Literal["predicted", "label"] = "predicted"
    concepts: ConceptsConfig = ConceptsConfig()

    @field_validator("explainers")
    @classmethod
    def _known_explainers(cls, v: list[str], info: ValidationInfo) -> list[str]:
        explainers = _registry(info, "explainers")
        if not v:
            valid = f"; valid: {', '.join(explainers.names())}" if explainers is not None else ""
            raise ValueError(f"needs at least one explainer{valid}")
        for i, name in enumerate(v):
            if explainers is not None:
                explainers.get(name, where=f"explain.explainers[{i}]")
        if len(set(v)) != len(v):
            raise ValueError("lists an explainer twice")
        return v


class FaithfulnessConfig(Strict):
    """Settings of the perturbation metrics (costs scale with these; see README)."""

    perturb_baseline: Literal["black", "white", "mean", "uniform"] = "black"
    nr_runs: int = Field(8, ge=2)          # FaithfulnessCorrelation
    subset_fraction: float = Field(0.05, gt=0, le=1)  # FaithfulnessCorrelation, share of pixels
    n_steps: int = Field(6, ge=2)          # PixelFlipping and MonotonicityCorrelation
    nr_samples: int = Field(3, ge=1)        # MonotonicityCorrelation
    patch_fraction: float = Field(0.125, gt=0, le=1)  # RegionPerturbation patch side / image side
    regions_evaluation: int = Field(8, ge=1)
    # PixelFlipping and RegionPerturbation: spans below this share of the curve's range are refused
    span_tolerance: float = Field(0.1, gt=0, le=1)
    road_percentages: list[float] = Field([20.0, 40.0, 60.0, 80.0], min_length=1)  # ROAD, % of the grid's cells
    road_noise: float = Field(0.01, ge=0)   # ROAD's imputation noise (normalised input units)
    pixel_grid: int = Field(12, ge=1)       # cells per side for pixel-level maps (IG, saliency)


class SanityConfig(Strict):
    """MPRT, MaxSensitivity and RandomLogit re-explain inputs: they run on the first ``n_images`` images."""

    n_images: int = Field(8, ge=2)
    nr_samples: int = Field(2, ge=1)        # MaxSensitivity perturbations per image


class BootstrapConfig(Strict):
    n_resamples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)


#: The pointing game's tolerance at part locations, a share of the image side: 15 px at 224 px
#: (Zhang et al., 2018), ``evaluate.keypoint_tolerance``'s default.
KEYPOINT_TOLERANCE = 0.067


class EvaluateConfig(Strict):
    """Metrics of docs/METHOD.md, section 4 (``evaluate`` stage)."""

    quantus: list[str] = ["PointingGame", "AttributionLocalisation", "RelevanceMassAccuracy",
                          "RelevanceRankAccuracy", "TopKIntersection", "AUC",
                          "FaithfulnessCorrelation", "PixelFlipping", "RegionPerturbation",
                          "MonotonicityCorrelation", "SymmetricMoRFLeRF", "ROAD", "Sparseness", "RandomLogit", "MPRT", "MaxSensitivity"]
    softmax: bool = False
    purity_m: int = Field(10, ge=1)
    top_k_fraction: float = Field(0.1, gt=0, le=1)
    #: How far from an annotated part location (CUB's keypoints) the map's maximum may lie and still
    #: hit it, as a share of the image side (:data:`KEYPOINT_TOLERANCE`).
    keypoint_tolerance: float = Field(KEYPOINT_TOLERANCE, ge=0, le=1)
    faithfulness: FaithfulnessConfig = FaithfulnessConfig()
    sanity: SanityConfig = SanityConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    compare: list[tuple[str, str]] = [("B4", "B234")]

    @field_validator("quantus")
    @classmethod
    def _known_metrics(cls, v: list[str], info: ValidationInfo) -> list[str]:
        metrics = _registry(info, "quantus_metrics")
        for i, name in enumerate(v):
            if metrics is not None:
                metrics.get(name, where=f"evaluate.quantus[{i}]")
        _refuse_repeats(v, "metric")
        return v

    @field_validator("compare")
    @classmethod
    def _valid_pairs(cls, v):
        seen: dict[frozenset, int] = {}
        for i, (a, b) in enumerate(v):
            for name in (a, b):
                check_combination_name(name, where=f"evaluate.compare[{i}]")
            if a == b:
                raise ParamsError(f"evaluate.compare[{i}]: compares {a} with itself (a paired "
                                  f"difference of zero); pair two different combinations, such as [B4, B234]")
            if frozenset((a, b)) in seen:  # [A, B] and [B, A] are one comparison, its sign flipped
                raise ParamsError(f"evaluate.compare[{i}]: the pair {a}, {b} is already "
                                  f"evaluate.compare[{seen[frozenset((a, b))]}]; list each pair once")
            seen[frozenset((a, b))] = i
        return v


def _refuse_repeats(values: list[str], what: str) -> None:
    """A name listed twice would be computed twice and counted twice in every table."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"lists the {what} {', '.join(repeated)} twice; list each once")


#: The concept-fidelity metrics (:data:`kmx_eval.metrics.evaluation.CONCEPT_METRICS`; not imported from there:
#: it imports torch and scikit-learn, which validating params must not; a test checks the two are equal).
CONCEPT_METRICS = tuple(f"concept_{score}_{region}" for region in ("object", "image")
                        for score in ("purity", "ari", "nmi", "ami"))


class PrimaryConfig(Strict):
    """The primary endpoint of each claim of the headline (``report.primary``; docs/METHOD.md,
    section 6, "Primary endpoints"): one metric per claim, declared before the numbers are seen, decided
    on its own interval; every other comparison is secondary. ``localisation`` is the headline's
    ``report.fidelity_metric`` (filled in from it when left out); ``faithfulness``, when given, adds
    the faithfulness sentence; ``concepts`` the concepts sentence."""

    localisation: str | None = None
    faithfulness: str | None = None
    #: A concept-fidelity metric (:data:`CONCEPT_METRICS`), when given, adds the concepts sentence.
    concepts: str | None = None

    @field_validator("concepts")
    @classmethod
    def _concept_metric(cls, v: str | None) -> str | None:
        if v is not None and v not in CONCEPT_METRICS:
            raise ParamsError(f"report.primary.concepts: {v!r} is not a concept-fidelity metric; pick one of "
                              f"{', '.join(CONCEPT_METRICS)}")
        return v


class ReportConfig(Strict):
    title: str = "kmx-eval: semantic fidelity versus accuracy of k-means explanations"
    gallery_images: int = Field(6, ge=1)
    fidelity_metric: str = "RelevanceMassAccuracy"
    #: The k-means explainer of the trade-off figure, the headlines and the gallery.
    explainer: str = "margin"
    primary: PrimaryConfig = PrimaryConfig()

    @model_validator(mode="before")
    @classmethod
    def _primary_localisation(cls, data: Any) -> Any:
        """The primary localisation endpoint is the fidelity metric: filled in from it, or equal to it."""
        if not isinstance(data, dict):
            return data
        fidelity = data.get("fidelity_metric", cls.model_fields["fidelity_metric"].default)
        primary = data.get("primary")
        primary = {} if primary is None else primary
        if not isinstance(primary, dict):
            return data  # a PrimaryConfig already, or a wrong type that the field reports
        declared = primary.get("localisation")
        if declared is None:
            return {**data, "primary": {**primary, "localisation": fidelity}}
        if declared != fidelity:
            raise ParamsError(f"report.primary.localisation {declared!r} differs from report.fidelity_metric "
                              f"{fidelity!r}: the headline, the trade-off figure and the key numbers read one "
                              "localisation endpoint; set report.fidelity_metric and leave "
                              "report.primary.localisation out (or equal to it)")
        return data


class Params(Strict):
    """The whole of ``params.yaml``."""

    seeds: list[int] = [0]
    datasets: dict[str, DatasetConfig]
    backbone: BackboneConfig = BackboneConfig()
    combinations: list[str] = ["B4", "B34", "B234"]
    features: FeaturesConfig = FeaturesConfig()
    head: HeadConfig = HeadConfig()
    explain: ExplainConfig = ExplainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed, such as [0]")
        for i, seed in enumerate(v):
            check_seed(seed, f"seeds[{i}]")
        if len(set(v)) != len(v):
            raise ValueError("lists a seed twice")
        return v

    @field_validator("datasets", mode="before")
    @classmethod
    def _dataset_sources(cls, v: Any, info: ValidationInfo) -> Any:
        """Validate each entry against the config model of its ``source``."""
        SOURCES = _registry(info, "sources")
        if SOURCES is None:
            # Entries cannot be parsed without their source's Config: the registry is needed.
            from kmx_eval.data import SOURCES

        if isinstance(v, list):  # `- shapes: {...}` items: DVC's matrix needs names as keys
            raise ParamsError("datasets: is a list; write it as a mapping from names to entries, "
                              "without the '- ', such as datasets: {shapes: {source: synthetic}}")
        if not isinstance(v, dict) or not v:
            raise ValueError("needs at least one named dataset entry, such as shapes: {source: synthetic}")
        out = {}
        folded: dict[str, str] = {}
        for name, entry in v.items():
            if not isinstance(name, str) or not name.replace("_", "").isalnum():
                raise ValueError(f"dataset name {name!r} must be letters, digits and underscores")
            if name.casefold() in folded:  # data/Digits and data/digits are one folder on macOS, Windows
                raise ParamsError(f"datasets: {folded[name.casefold()]!r} and {name!r} differ only in "
                                  f"case, and their output folders (data/<name>, models/<name>...) "
                                  f"collide on a case-insensitive file system; rename one")
            folded[name.casefold()] = name
            if isinstance(entry, DatasetConfig):
                out[name] = entry
                continue
            if not isinstance(entry, dict) or "source" not in entry:
                raise ParamsError(
                    f"datasets.{name}: needs a 'source'; valid: {', '.join(SOURCES.names())}"
                )
            source = SOURCES.get(entry["source"], where=f"datasets.{name}.source")
            try:
                out[name] = source.Config.model_validate(entry)
            except ValidationError as exc:
                raise ParamsError(format_validation_error(exc, prefix=f"datasets.{name}", root=source.Config)) from None
        return out

    @field_validator("combinations")
    @classmethod
    def _combinations(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one block combination, such as [B4, B34, B234]")
        for i, name in enumerate(v):
            check_combination_name(name, where=f"combinations[{i}]")
        if len(set(v)) != len(v):
            raise ValueError("lists a block combination twice")
        return v

    @model_validator(mode="after")
    def _headline_measure(self, info: ValidationInfo) -> "Params":
        """report.fidelity_metric must be a localisation measure a per-image constant cannot move."""
        metrics = _registry(info, "quantus_metrics")
        if metrics is not None and self.report.fidelity_metric in self.evaluate.quantus:
            refusal = metrics.get(self.report.fidelity_metric).refusal_as_headline()
            if refusal:
                raise ParamsError(f"report.fidelity_metric: {refusal}; pick an invariant localisation "
                                  "metric such as RelevanceRankAccuracy or RelevanceMassAccuracy")
        return self

    @model_validator(mode="after")
    def _primary_endpoints(self, info: ValidationInfo) -> "Params":
        """Each primary endpoint is computed (in evaluate.quantus) and of its claim's category; the
        localisation one is report.fidelity_metric, checked as such (_headline_measure and below)."""
        metrics = _registry(info, "quantus_metrics")
        for claim, name in (("faithfulness", self.report.primary.faithfulness),):
            if name is None:
                continue
            valid = [m for m in self.evaluate.quantus
                     if metrics is None or (m in metrics and metrics.get(m).category.value == claim)]
            choices = f"pick a {claim} metric of evaluate.quantus ({', '.join(valid) or 'none listed'})"
            if name not in self.evaluate.quantus:
                raise ParamsError(f"report.primary.{claim}: {name!r} is not computed; {choices}")
            if name not in valid:
                raise ParamsError(f"report.primary.{claim}: {name!r} is a "
                                  f"{metrics.get(name).category.value} metric; {choices}")
        return self

    @model_validator(mode="after")
    def _compare_in_combinations(self, info: ValidationInfo) -> "Params":
        architectures = _registry(info, "architectures")
        if architectures is not None:  # each dataset's architecture must have every block used
            for name in self.datasets:
                cfg = self.backbone_for(name, context=info.context)
                arch = architectures.get(cfg.architecture)
                for i, comb in enumerate(self.combination_list()):
                    arch.check_blocks(comb.blocks, comb.name,
                                      f"combinations[{i}] (the backbone of dataset {name!r})")
        for i, (a, b) in enumerate(self.evaluate.compare):
            for name in (a, b):
                if name not in self.combinations:
                    raise ParamsError(
                        f"evaluate.compare[{i}]: {name!r} is not in combinations "
                        f"({', '.join(self.combinations)})"
                    )
        if self.report.explainer not in self.explain.explainers:
            raise ParamsError(
                f"report.explainer: {self.report.explainer!r} is not in explain.explainers "
                f"({', '.join(self.explain.explainers)})"
            )
        explainers = _registry(info, "explainers")
        if explainers is not None:  # the report's trade-off and gallery show a k-means map
            kmeans = [n for n in self.explain.explainers if explainers.get(n).explains == "kmeans"]
            if self.report.explainer not in kmeans:
                explains = explainers.get(self.report.explainer).explains
                raise ParamsError(
                    f"report.explainer: {self.report.explainer!r} explains "
                    f"{'the CNN' if explains == 'cnn' else 'any model (a control)'}, not the k-means "
                    f"head; pick a k-means explainer of explain.explainers: {', '.join(kmeans) or 'none listed'}")
        if self.report.fidelity_metric not in self.evaluate.quantus:
            raise ParamsError(
                f"report.fidelity_metric: {self.report.fidelity_metric!r} is not computed; "
                f"pick one of evaluate.quantus ({', '.join(self.evaluate.quantus)})"
            )
        for name, ds in self.datasets.items():
            self.backbone_for(name, context=info.context)  # validates merged overrides
        return self

    # ------------------------------------------------------------------ helpers for stages
    def backbone_for(self, dataset: str, context: dict | None = None) -> BackboneConfig:
        """The backbone settings of ``dataset``: the global section with its overrides applied."""
        over = self.datasets[dataset].backbone.model_dump(exclude_none=True)
        merged = {**self.backbone.model_dump(), **over}
        try:
            return BackboneConfig.model_validate(merged, context=context)
        except ValidationError as exc:
            raise ParamsError(format_validation_error(exc, prefix=f"datasets.{dataset}.backbone",
                                                     root=BackboneConfig)) from None

    def to_full_dict(self) -> dict[str, Any]:
        """Every key of the study with its value, schema defaults written out.

        ``dvc.yaml`` tracks single keys (``features.resize``, ``datasets.<name>.seed``...), and DVC
        refuses to run a stage whose tracked key is missing from ``params.yaml`` even where the
        schema has a default: writing this dict back as ``params.yaml`` keeps the same study and
        satisfies DVC.
        """
        return {
            "seeds": list(self.seeds),
            # Each entry is its source's own Config subclass: dump it as such, not as the base.
            "datasets": {name: cfg.model_dump(mode="json", exclude_none=True)
                         for name, cfg in self.datasets.items()},
            **self.model_dump(mode="json", exclude={"seeds", "datasets"}),
        }

    def combination_list(self) -> list[Combination]:
        return [self.combination(c) for c in self.combinations]

    def combination(self, name: str, where: str = "combination") -> Combination:
        """The combination ``name`` of this study, with ``features.block_weighting`` applied when its
        name has no weighting suffix; a name not in ``combinations`` is an error."""
        comb = parse_combination(name, where=where, weighting=self.features.block_weighting)
        if comb.name not in self.combinations:
            raise ParamsError(f"{where} {comb.name!r} is not in params combinations "
                              f"({', '.join(self.combinations)})")
        return comb

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ParamsError(
                f"dataset {name!r} is not in params.yaml{did_you_mean(name, self.datasets)}; "
                f"defined: {', '.join(self.datasets)}"
            )
        return self.datasets[name]


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    return sorted(model.model_fields) if model is not None else []


def _model_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for 'valid keys' hints)."""
    model: Any = root
    for part in loc[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def format_validation_error(exc: ValidationError, prefix: str = "", root: type[BaseModel] | None = None) -> str:
    """Turn a pydantic error into one line per problem: ``key: what is wrong; valid: ...``."""
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(([prefix] if prefix else []) + list(loc))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc, root or root_model_for(exc) or Params)
            valid = _allowed_keys(owner)
            hint = did_you_mean(loc[-1], valid) if valid else ""
            extra = "; valid keys: " + ", ".join(valid) if valid else ""
            if loc[-1] == "seed" and "backbone" in loc:
                extra += " (training and k-means seeds are the top-level 'seeds' list)"
            lines.append(f"{key}: unknown key{hint}{extra}")
            continue
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        got = err.get("input")
        if err["type"] not in ("missing",) and not isinstance(got, (dict, list)):
            msg += f" (got {got!r})"
        if err["type"] == "list_type" and isinstance(got, (str, int, float)):
            msg += f"; write a list, such as [{got}]"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def root_model_for(exc: ValidationError) -> type[BaseModel] | None:
    return {"Params": Params}.get(exc.title)


def parse_params(raw: Any, source: str = "params.yaml", registries: dict | None = None) -> Params:
    """Validate an already-parsed params mapping; raises :class:`ParamsError` with one message.

    ``registries`` maps ``sources``, ``architectures``, ``explainers`` and ``quantus_metrics`` to
    the registries that names are checked against; a name whose registry is not given is checked
    where it is used. :func:`kmx_eval.validation.parse_params` passes all of them.
    """
    if raw is None:
        raise ParamsError(f"{source} is empty; it needs at least a 'datasets' mapping, such as "
                          f"datasets: {{shapes: {{source: synthetic}}}} (every other section has defaults)")
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections (seeds:, datasets:, backbone: ...), "
                          f"got a {type(raw).__name__}")
    try:
        return Params.model_validate(raw, context=registries or {})
    except ValidationError as exc:
        raise ParamsError(f"{source}: {format_validation_error(exc)}") from None
    except ParamsError as exc:
        raise ParamsError(f"{source}: {exc}") from None


def read_params_file(path: str | Path = "params.yaml") -> Any:
    """The parsed YAML of a params file; one-line errors when it is missing or not YAML."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} does not exist; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    return raw


def load_params(path: str | Path = "params.yaml", registries: dict | None = None) -> Params:
    """Read and validate ``params.yaml`` (``registries`` as in :func:`parse_params`)."""
    return parse_params(read_params_file(path), source=str(path), registries=registries)

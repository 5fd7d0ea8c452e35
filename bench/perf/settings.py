"""What `hizfo-bench perf` measures: PerfSettings."""

from __future__ import annotations

from dataclasses import dataclass

# The paper's tokens per step (batch, sequence length): MeZO's setting, 16 x 512
# (`hizfo-bench perf --paper-batch`). Slow on CPU, so not the default nor nightly.
PAPER_BATCH = (16, 512)


@dataclass
class PerfSettings:
    """What `hizfo-bench perf` measures.

    Attributes:
        model: model source (bench.models): the embedded model by default. Ignored when
            model_config is set.
        model_config: a bench.model_configs name (llama-1b, llama-7b, opt-1.3b, opt-13b)
            or a config JSON file: a randomly initialised model of that shape, built on
            the device (no download).
        scale: shrink model_config's shape by this factor (bench.model_configs.scaled);
            None: 1 on GPU, model_configs.CPU_SCALE on CPU.
        batch_size, seq_len: the batch, random token ids of full length (speed does not
            depend on the tokens); 8 x 64 as in the mini suite; PAPER_BATCH (16 x 512,
            MeZO's setting) is the paper's token count per step.
        dtype: parameter dtype.
        device: "cpu", "cuda", or None for cuda when available.
        repeats: timed rounds per workload at least (each round times every workload of
            a ratio once, interleaved).
        max_repeats: rounds at most: after `repeats`, rounds are added until every paired
            ratio's 95% interval is within +-INTERVAL_TOLERANCE, or this many were run.
        warmup: untimed rounds before them.
        methods: registered method names, each run in the variants its class declares
            (``perf_variants``). Missing methods are skipped.
        naive: also time the naive MeZO reference.
        threads: torch intra-op threads (None: torch's default).
    """

    model: str = "smollm2-135m"
    model_config: str | None = None
    scale: float | None = None
    batch_size: int = 8
    seq_len: int = 64
    dtype: str = "float32"
    device: str | None = None
    repeats: int = 5
    max_repeats: int = 20
    warmup: int = 1
    methods: tuple[str, ...] = ("mezo", "fo-adamw", "hizfo", "lora")
    naive: bool = True
    threads: int | None = None

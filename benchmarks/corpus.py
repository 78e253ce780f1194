"""A deterministic, source-tree-like corpus of text files for the scan benchmark.

`generate` writes N text files in nested folders: source code, config, CSV exports,
logs and Markdown. Each file's target size is drawn from a lognormal distribution
(median `MEDIAN_BYTES`, sigma `SIGMA`, clamped to `MIN_BYTES`..`MAX_BYTES`): most
files are a few KB and a handful reach the cap. About `PII_RATE` of the lines carry
one planted personal-data value (emails, phone numbers, an IBAN, a test card number,
192.0.2.x addresses), written the way each kind of file would hold it.

`Corpus.mutate` edits a fraction of the files in place, as a day of work would:
rewrite a few lines, append a line, now and then replace a personal-data value. It
returns the *changed bytes*: the sum of the new sizes of the files it rewrote.
Everything depends only on the seeds, so two corpora built alike change alike.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MEDIAN_BYTES = 3_500
SIGMA = 1.0
MIN_BYTES = 120
MAX_BYTES = 60 * 1024
PII_RATE = 0.005  # share of generated lines that carry one planted value
CHANGED_BYTES_DEFINITION = "sum of the new sizes (bytes) of the files a mutation rewrote"

# Kind -> (weight, extensions). Weights are shares of the files.
KINDS: dict[str, tuple[float, tuple[str, ...]]] = {
    "source": (0.45, (".py",)),
    "config": (0.15, (".yaml", ".yml")),
    "csv": (0.10, (".csv",)),
    "log": (0.12, (".log",)),
    "markdown": (0.18, (".md",)),
}
EXTENSION_KIND = {ext: kind for kind, (_, exts) in KINDS.items() for ext in exts}

_FIRST = ("anna", "ben", "carla", "dev", "elif", "femi", "grace", "hugo", "ines", "jon")
_LAST = ("smith", "okafor", "nguyen", "garcia", "muller", "rossi", "kowalski", "tanaka")
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.co.uk")
_PHONES = (
    "+44 20 7946 0{:03d}",
    "(212) 555-0{:03d}",
    "020 7946 0{:03d}",
    "+1 415 555 0{:03d}",
)
_WORDS = (
    "account",
    "customer",
    "order",
    "invoice",
    "payment",
    "record",
    "batch",
    "export",
    "import",
    "user",
    "session",
    "token",
    "cache",
    "queue",
    "worker",
    "retry",
    "timeout",
    "handler",
    "request",
    "response",
    "service",
    "client",
    "server",
    "report",
    "schema",
    "field",
    "value",
    "config",
    "region",
    "tenant",
    "audit",
    "policy",
    "consent",
    "profile",
    "address",
    "billing",
    "shipment",
    "ledger",
    "balance",
    "rate",
    "limit",
    "window",
    "metric",
    "event",
    "stream",
    "partition",
    "offset",
)
_SERVICES = ("billing", "accounts", "search", "ledger", "notify", "gateway", "reports", "auth")
_MODULES = ("api", "core", "models", "handlers", "jobs", "utils", "adapters", "storage")
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


def pii_value(rng: random.Random) -> str:
    """One planted personal-data value (all from documentation or test ranges)."""
    roll = rng.random()
    if roll < 0.45:
        name = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}"
        return f"{name}@{rng.choice(_DOMAINS)}"
    if roll < 0.70:
        return rng.choice(_PHONES).format(rng.randrange(1000))
    if roll < 0.85:
        return f"192.0.2.{rng.randrange(1, 255)}"
    if roll < 0.93:
        return "GB82 WEST 1234 5698 7654 32"
    return "4111 1111 1111 1111"


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _ident(rng: random.Random) -> str:
    return "_".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))


def _source_line(rng: random.Random, pii: str | None) -> str:
    indent = "    " * rng.randint(0, 3)
    if pii is not None:
        return f"{indent}# contact {pii} for {_words(rng, 1, 3)}"
    roll = rng.random()
    if roll < 0.10:
        return ""
    if roll < 0.20:
        return f"def {_ident(rng)}({_ident(rng)}, {_ident(rng)}=None):"
    if roll < 0.35:
        return f"{indent}# {_words(rng, 3, 12)}"
    if roll < 0.50:
        return f"{indent}if {_ident(rng)} > {rng.randint(0, 500)}:"
    if roll < 0.60:
        return f'{indent}logger.info("{_words(rng, 2, 6)} %s", {_ident(rng)})'
    if roll < 0.70:
        return f"{indent}return {_ident(rng)}.{_ident(rng)}({_ident(rng)})"
    return f"{indent}{_ident(rng)} = {_ident(rng)}.get({_ident(rng)!r}, {rng.randint(0, 99)})"


def _config_line(rng: random.Random, pii: str | None) -> str:
    key = _ident(rng)
    if pii is not None:
        return f"{key}_contact: {pii!r}"
    roll = rng.random()
    if roll < 0.15:
        return f"{key}:"
    if roll < 0.40:
        return f"  {key}: {rng.randint(0, 65535)}"
    if roll < 0.55:
        return f"  {key}: {rng.choice(('true', 'false', 'null'))}"
    if roll < 0.65:
        return f"  {key}_timeout: {rng.randint(1, 300)}.{rng.randint(0, 9)}"
    return f"  {key}: {_ident(rng)}-{rng.choice(_SERVICES)}"


def _csv_line(rng: random.Random, pii: str | None) -> str:
    day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    amount = f"{rng.randint(0, 99999)}.{rng.randint(0, 99):02d}"
    note = pii if pii is not None else _words(rng, 1, 4)
    return f"{rng.randint(10000, 999999)},{day},{rng.choice(_SERVICES)},{amount},GBP,{note}"


def _log_line(rng: random.Random, pii: str | None) -> str:
    stamp = (
        f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
        f"{rng.randint(0, 999):03d}Z"
    )
    level = rng.choice(_LEVELS)
    where = f"{rng.choice(_SERVICES)}.{rng.choice(_MODULES)}"
    extra = f" client={pii}" if pii is not None else f" took={rng.randint(1, 5000)}ms"
    return f"{stamp} {level:5} [{where}] {_words(rng, 3, 10)}{extra}"


def _markdown_line(rng: random.Random, pii: str | None) -> str:
    if pii is not None:
        return f"Questions about {_words(rng, 1, 3)}: ask {pii}."
    roll = rng.random()
    if roll < 0.12:
        return ""
    if roll < 0.20:
        return f"{'#' * rng.randint(1, 3)} {_words(rng, 2, 5).title()}"
    if roll < 0.40:
        return f"- {_words(rng, 3, 12)}"
    if roll < 0.45:
        return f"    {_ident(rng)}.{_ident(rng)}()"
    return f"{_words(rng, 6, 20).capitalize()}."


LINES: dict[str, Callable[[random.Random, str | None], str]] = {
    "source": _source_line,
    "config": _config_line,
    "csv": _csv_line,
    "log": _log_line,
    "markdown": _markdown_line,
}
_HEADERS = {"csv": "id,date,service,amount,currency,note"}
_PII_MARKERS = ("@", "192.0.2.", "GB82 WEST", "4111 1111", "555-0", "555 0", "7946 0")


def _line(rng: random.Random, kind: str, pii_rate: float = PII_RATE) -> tuple[str, bool]:
    planted = rng.random() < pii_rate
    return LINES[kind](rng, pii_value(rng) if planted else None), planted


def _folder(rng: random.Random, kind: str) -> str:
    service = rng.choice(_SERVICES)
    if kind == "source":
        depth = rng.randint(0, 2)
        parts = [rng.choice(_MODULES) for _ in range(depth)]
        return "/".join(["services", service, "src", *parts])
    if kind == "config":
        return rng.choice((f"services/{service}/config", "config", f"deploy/{service}/overlays"))
    if kind == "csv":
        return f"data/exports/{rng.randint(2021, 2024)}/{rng.choice(_SERVICES)}"
    if kind == "log":
        return f"logs/{service}/2024-{rng.randint(1, 12):02d}"
    return rng.choice(("docs", f"docs/{service}", f"services/{service}"))


def _target_size(rng: random.Random) -> int:
    size = rng.lognormvariate(math.log(MEDIAN_BYTES), SIGMA)
    return int(min(MAX_BYTES, max(MIN_BYTES, size)))


@dataclass
class Corpus:
    """A generated tree of text files under `root`, and how to change it."""

    root: Path
    paths: list[str]  # relative, '/'-separated, sorted
    planted: int  # personal-data values written at generation
    sizes: list[int] = field(default_factory=list)

    def kind(self, relative: str) -> str:
        return EXTENSION_KIND[Path(relative).suffix]

    def mutate(self, rng: random.Random, fraction: float) -> int:
        """Edit `fraction` of the files in place; return the changed bytes (see module doc)."""
        count = max(1, round(len(self.paths) * fraction))
        changed = 0
        for relative in rng.sample(self.paths, count):
            path = self.root / relative
            before = path.read_text(encoding="utf-8")
            lines = before.split("\n")
            kind = self.kind(relative)
            for _ in range(10):  # an edit that changes nothing is retried
                after = "\n".join(_edit(rng, kind, list(lines)))
                if after != before:
                    break
            data = after.encode("utf-8")
            path.write_bytes(data)
            changed += len(data)
        return changed

    def summary(self) -> str:
        """One line: file count, kinds, size distribution, planted values."""
        sizes = sorted(self.sizes)
        kinds = Counter(self.kind(p) for p in self.paths)
        shares = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        p90 = statistics.quantiles(sizes, n=10)[8] if len(sizes) > 1 else sizes[0]
        return (
            f"{len(sizes):,} files, {sum(sizes):,} bytes ({shares}); target sizes lognormal "
            f"(median {MEDIAN_BYTES:,} B, sigma {SIGMA}, clamped to {MIN_BYTES}-{MAX_BYTES:,} B, "
            "then rounded up to a whole line): "
            f"measured min/median/p90/max = {sizes[0]:,}/{statistics.median(sizes):,.0f}/"
            f"{p90:,.0f}/{sizes[-1]:,} B; {self.planted:,} planted personal-data values "
            f"(~{PII_RATE:.1%} of lines)"
        )


def _edit(rng: random.Random, kind: str, lines: list[str]) -> list[str]:
    """One file's edit: rewrite 1-3 lines (70%), append a line (20%), replace a finding."""
    body = range(1 if kind in _HEADERS else 0, len(lines))
    roll = rng.random()
    if roll < 0.70 and len(body) > 0:
        for index in rng.sample(body, min(len(body), rng.randint(1, 3))):
            lines[index] = _line(rng, kind)[0]
        return lines
    if roll < 0.90 or len(body) == 0:
        if lines and lines[-1] == "":
            lines.insert(len(lines) - 1, _line(rng, kind)[0])
        else:
            lines.append(_line(rng, kind)[0])
        return lines
    with_pii = [i for i in body if any(marker in lines[i] for marker in _PII_MARKERS)]
    index = rng.choice(with_pii) if with_pii else rng.choice(body)
    lines[index] = LINES[kind](rng, pii_value(rng))
    return lines


def generate(root: Path, files: int, seed: int) -> Corpus:
    """Write `files` text files under `root` (which must be empty or absent)."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    weights = [KINDS[k][0] for k in kinds]
    paths: dict[str, int] = {}
    planted = 0
    while len(paths) < files:
        kind = rng.choices(kinds, weights)[0]
        ext = rng.choice(KINDS[kind][1])
        relative = f"{_folder(rng, kind)}/{_ident(rng)}_{len(paths):05d}{ext}"
        target = _target_size(rng)
        lines = [_HEADERS[kind]] if kind in _HEADERS else []
        size = sum(len(x) + 1 for x in lines)
        while size < target:
            line, hit = _line(rng, kind)
            lines.append(line)
            planted += hit
            size += len(line) + 1
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[relative] = len(data)
    return Corpus(root, sorted(paths), planted, list(paths.values()))

"""Built-in processors: find personal data in files, summarise and merge findings.

`PersonalDataProcessor` applies precompiled pattern rules file by file
(`PersonalDataProcessor.scan_file`), so a later item-level cache can reuse
per-file results keyed by the file's digest. Rules run in a fixed priority order
and a match claims its span: the digits inside an IBAN are never reported again
as a card or a phone number. Evidence is always masked. Every output is sorted
and free of clocks and machine paths, so unchanged inputs give identical bytes.
"""

from __future__ import annotations

import ipaddress
import re
import string
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, ClassVar, TypedDict

from cas.connectors import FILE_CONTENT, resolve_properties
from cas.digest import Digest, canonical_json
from cas.errors import InvalidInputError
from cas.model import Message, SchemaRef
from cas.plugins import ItemProcessor, Processor

FINDINGS = SchemaRef("personal_data_findings", "1.0.0")
SUMMARY = SchemaRef("summary", "1.0.0")
MERGED = SchemaRef("merged", "1.0.0")
CATEGORIES = ("email", "phone", "iban", "credit_card", "ip_address", "national_id")
DEFAULT_MAX_FINDINGS = 1000


class Finding(TypedDict):
    """One masked occurrence of personal data; line and column are 1-based."""

    file: str
    line: int
    column: int
    category: str
    rule: str
    evidence: str


# --- validators -------------------------------------------------------------------------

_IBAN_TABLE = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
    "DK18 DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 "
    "IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 "
    "ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 "
    "SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
)
IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_TABLE.split(" ")}
_CARD_PREFIX = re.compile(r"4|5[0-9]|6|3[0-9]|2(?:2[2-9]|[3-6]\d|7[01]|720)")
_SSN_INVALID = frozenset({"078-05-1120", "219-09-9999", "123-45-6789"})
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_IMAGE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff"})
_DIGITS = frozenset(string.digits)  # ASCII only: str.isdigit() also accepts '²' and '٣'
_SEPARATOR = re.compile(r"[ -]")
_COUNTRY_CODE = re.compile(r"\+(\d{1,3})[ .(-]")
_ALPHANUMERIC = re.compile(r"[0-9A-Z]")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn (mod 10) check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return bool(digits) and _DIGITS.issuperset(digits) and total % 10 == 0


def card_valid(digits: str) -> bool:
    """Whether `digits` looks like a payment card number: length, issuer prefix and Luhn."""
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def iban_valid(text: str) -> bool:
    """Whether `text` (spaces allowed) is an IBAN of its country's length with mod-97 = 1."""
    compact = text.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    if not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def ssn_valid(text: str) -> bool:
    """Whether ``ddd-dd-dddd`` is a possible US SSN (no 000/666/9xx area, 00 group, 0000)."""
    if not _SSN_SHAPE.fullmatch(text):
        return False
    area, group, serial = text.split("-")
    return (
        area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
        and text not in _SSN_INVALID
    )


def nino_valid(text: str) -> bool:
    """Whether `text` is a UK National Insurance number shape with an allowed prefix."""
    compact = text.replace(" ", "")
    return (
        len(compact) == 9
        and compact[0] not in "DFIQUV"
        and compact[1] not in "DFIOQUV"
        and compact[:2] not in _NINO_BAD_PREFIXES
        and compact[2:8].isdigit()
        and compact[8] in "ABCD"
    )


def _ip_personal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        address.is_loopback or address.is_unspecified or address.is_multicast or address.is_reserved
    )


def ipv4_valid(text: str) -> bool:
    """Whether `text` is a dotted IPv4 address (no leading zeros) that may identify a host."""
    try:
        return _ip_personal(ipaddress.IPv4Address(text))
    except ValueError:
        return False


def ipv6_valid(text: str) -> bool:
    """Whether `text` is an IPv6 address (3+ colons) that may identify a host."""
    try:
        return text.count(":") >= 3 and _ip_personal(ipaddress.IPv6Address(text))
    except ValueError:
        return False


# --- candidate checks: the accepted value (a prefix of the match) or None ----------------


def _digits(text: str) -> str:
    return "".join(char for char in text if char in _DIGITS)


def _check_card(candidate: str) -> str | None:
    # A greedy match may run into a following number ("... 1111 12/25"): drop groups.
    ends = [match.start() for match in _SEPARATOR.finditer(candidate)] + [len(candidate)]
    for end in reversed(ends):
        if card_valid(_digits(candidate[:end])):
            return candidate[:end]
    return None


def _check_iban(candidate: str) -> str | None:
    length = IBAN_LENGTHS.get(candidate[:2])
    if length is None:
        return None
    ends = [i + 1 for i, char in enumerate(candidate) if char != " "]
    if len(ends) < length:
        return None
    value = candidate[: ends[length - 1]]
    return value if iban_valid(value) else None


def _check_email(candidate: str) -> str | None:
    return None if candidate.rsplit(".", 1)[1].lower() in _IMAGE_TLDS else candidate


def _digit_count(low: int, high: int) -> Callable[[str], str | None]:
    def check(candidate: str) -> str | None:
        return candidate if low <= len(_digits(candidate)) <= high else None

    return check


def _accept(predicate: Callable[[str], bool]) -> Callable[[str], str | None]:
    def check(candidate: str) -> str | None:
        return candidate if predicate(candidate) else None

    return check


# --- masks: evidence never holds the whole value ----------------------------------------


def mask_email(value: str) -> str:
    """``john.doe@example.com`` → ``j***@e******.com``."""
    local, domain = value.rsplit("@", 1)
    head, tld = domain.rsplit(".", 1)
    return f"{local[0]}***@{head[0]}{'*' * (len(head) - 1)}.{tld}"


def mask_card(value: str) -> str:
    """Any card number → ``**** **** **** 1234``."""
    return f"**** **** **** {_digits(value)[-4:]}"


def mask_iban(value: str) -> str:
    """Country code and last four characters, the rest starred, in groups of four."""
    compact = value.replace(" ", "")
    masked = compact[:2] + "*" * (len(compact) - 6) + compact[-4:]
    return " ".join(masked[i : i + 4] for i in range(0, len(masked), 4))


def mask_digits(value: str, keep_last: int, keep_first: int = 0) -> str:
    """Star every digit but the first `keep_first` and last `keep_last`; keep punctuation."""
    total = sum(char in _DIGITS for char in value)
    seen = 0
    out = []
    for char in value:
        if char in _DIGITS:
            seen += 1
            hidden = keep_first < seen <= total - keep_last
            out.append("*" if hidden else char)
        else:
            out.append(char)
    return "".join(out)


def mask_phone(value: str) -> str:
    """Last two digits, and a separated ``+CC`` country code; e.g. ``+44 ** **** **58``."""
    code = _COUNTRY_CODE.match(value)
    return mask_digits(value, 2, len(code.group(1)) if code else 0)


def mask_ssn(value: str) -> str:
    """``536-80-4398`` → ``***-**-4398``."""
    return mask_digits(value, 4)


def mask_nino(value: str) -> str:
    """``AB 12 34 56 C`` → ``AB ** ** ** *``."""
    return value[:2] + _ALPHANUMERIC.sub("*", value[2:])


def mask_ipv4(value: str) -> str:
    """``192.0.2.10`` → ``192.0.*.*``."""
    return ".".join(value.split(".")[:2]) + ".*.*"


def mask_ipv6(value: str) -> str:
    """The first two groups, e.g. ``2001:db8:*:*:*:*:*:*``."""
    groups = ipaddress.IPv6Address(value).exploded.split(":")
    return ":".join(group.lstrip("0") or "0" for group in groups[:2]) + ":*" * 6


# --- rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """A precompiled pattern, its check and its mask.

    `hint` must occur in a text for the rule to apply. A rule with an `anchor` (a
    pattern led by a literal, which every match contains) is searched for by that
    anchor, backing up over at most `reach` characters of `back`: far cheaper than
    trying the full pattern at every position of a long text.
    """

    name: str
    category: str
    pattern: re.Pattern[str]
    check: Callable[[str], str | None]
    mask: Callable[[str], str]
    hint: str = ""
    anchor: re.Pattern[str] | None = None
    back: frozenset[str] = frozenset()
    reach: int = 0

    def search(self, text: str, pos: int) -> re.Match[str] | None:
        """The first match of `pattern` at or after `pos`."""
        if self.anchor is None:
            return self.pattern.search(text, pos)
        while (hit := self.anchor.search(text, pos)) is not None:
            start, floor = hit.start(), max(pos, hit.start() - self.reach)
            while start > floor and text[start - 1] in self.back:
                start -= 1
            match = self.pattern.match(text, start)
            if match is not None:
                return match
            pos = hit.start() + 1
        return None


# Each pattern starts with a character class and checks what precedes it in a lookbehind
# after it (``\d(?<![\w-]\d)``): the regex engine then skips non-candidates at C speed.
_END = r"(?![\w-]|\.\d)"  # not inside a longer word, number or dotted/dashed sequence
_EMAIL = re.compile(
    # Not after ':' or '/' (credentials in a URL: scheme://user:secret@host), but mailto: is.
    r"(?:(?<=mailto:)|(?<![\w.%+/:-]))[A-Za-z0-9_%+-][A-Za-z0-9._%+-]*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_LOCAL_PART = frozenset(string.ascii_letters + string.digits + "._%+-")
_IBAN = re.compile(
    r"[A-Z](?<![\w-][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)"
)
_CARD = re.compile(r"\d(?<![\w.+-]\d)(?:[ -]?\d){12,18}" + _END)
_SSN = re.compile(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}" + _END)
_NINO = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z](?: ?\d{2}){3} ?[A-D](?!\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:]|\.\d)")
_IPV6_ANCHOR = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX = frozenset(string.hexdigits)
_IPV4_ANCHOR = re.compile(r"\.\d{1,3}\.\d")
_SSN_ANCHOR = re.compile(r"-\d\d-\d{4}")
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)")
_PHONE_INTL = re.compile(r"\+(?<![\w+]\+)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}" + _END)
_PHONE_US = re.compile(
    r"[(2-9](?<![\w+.-][(2-9])(?:(?<=\()[2-9]\d{2}\) ?|(?<=[2-9])\d{2}[-. ])[2-9]\d{2}[-. ]\d{4}"
    + _END
)
_PHONE_UK = re.compile(r"0(?<![\w+.-]0)\d{2,4}[ -]\d{3,4}(?:[ -]?\d{3,4})?" + _END)
_PHONE_FR = re.compile(r"0(?<![\w+.-]0)[1-9](?:[ .-]\d{2}){4}" + _END)

# Priority order: a value claimed by an earlier rule is not reported again by a later one.
RULES: tuple[Rule, ...] = (
    Rule("email", "email", _EMAIL, _check_email, mask_email, "@", re.compile("@"), _LOCAL_PART, 64),
    Rule("iban", "iban", _IBAN, _check_iban, mask_iban),
    Rule("credit_card", "credit_card", _CARD, _check_card, mask_card),
    Rule("us_ssn", "national_id", _SSN, _accept(ssn_valid), mask_ssn, "-", _SSN_ANCHOR, _DIGITS, 3),
    Rule("uk_nino", "national_id", _NINO, _accept(nino_valid), mask_nino),
    Rule("ipv6", "ip_address", _IPV6, _accept(ipv6_valid), mask_ipv6, ":", _IPV6_ANCHOR, _HEX, 4),
    Rule(
        "ipv4", "ip_address", _IPV4, _accept(ipv4_valid), mask_ipv4, ".", _IPV4_ANCHOR, _DIGITS, 3
    ),
    Rule("phone_international", "phone", _PHONE_INTL, _digit_count(8, 15), mask_phone, "+"),
    Rule("phone_us", "phone", _PHONE_US, _digit_count(10, 10), mask_phone),
    Rule("phone_uk", "phone", _PHONE_UK, _digit_count(10, 11), mask_phone),
    Rule("phone_fr", "phone", _PHONE_FR, _digit_count(10, 10), mask_phone),
)


class _Claims:
    """Disjoint claimed spans of one text, kept sorted by start."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def claim(self, start: int, end: int) -> bool:
        """Claim ``[start, end)`` unless it overlaps a span already claimed."""
        index = bisect_right(self.starts, start)
        if (index and self.ends[index - 1] > start) or (
            index < len(self.starts) and self.starts[index] < end
        ):
            return False
        self.starts.insert(index, start)
        self.ends.insert(index, end)
        return True


def _order(finding: Mapping[str, Any]) -> tuple[str, int, str, str, int, str]:
    file, line, category = finding["file"], finding["line"], finding["category"]
    return file, line, category, finding["evidence"], finding.get("column", 0), finding["rule"]


class PersonalDataProcessor(ItemProcessor):
    """Scans ``file_content`` for personal data and reports masked findings."""

    type: ClassVar[str] = "personal_data"
    version: ClassVar[str] = "1.0.0"  # bump whenever a rule or mask changes
    output_schema: ClassVar[SchemaRef] = FINDINGS
    input_schemas: ClassVar[tuple[SchemaRef, ...]] = (FILE_CONTENT,)
    properties_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "categories": {
                "type": "array",
                "items": {"enum": list(CATEGORIES)},
                "uniqueItems": True,
                "default": list(CATEGORIES),
                "description": "Categories to report (default: all).",
            },
            "max_findings_per_file": {
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_MAX_FINDINGS,
                "description": "Keep the first N findings of a file in sorted order.",
            },
        },
    }

    def __init__(
        self,
        categories: Iterable[str] = CATEGORIES,
        max_findings_per_file: int = DEFAULT_MAX_FINDINGS,
    ) -> None:
        self.categories = frozenset(categories)
        self.max_findings_per_file = max_findings_per_file

    def scan_file(self, path: str, text: str) -> list[Finding]:
        """Sorted findings of one file, at most ``max_findings_per_file``."""
        return self.scan_counted(path, text)[0]

    def scan_counted(self, path: str, text: str) -> tuple[list[Finding], bool]:
        """`scan_file` plus whether the file had more findings than the limit."""
        findings: list[Finding] = []
        starts: list[int] | None = None
        for offset, rule, value in _matches(text):
            if rule.category not in self.categories:
                continue
            if starts is None:  # most files have no findings: index lines lazily
                starts = [0, *accumulate(len(part) + 1 for part in text.split("\n"))]
            line = bisect_right(starts, offset)
            findings.append(
                Finding(
                    file=path,
                    line=line,
                    column=offset - starts[line - 1] + 1,
                    category=rule.category,
                    rule=rule.name,
                    evidence=rule.mask(value),
                )
            )
        findings.sort(key=_order)
        limit = self.max_findings_per_file
        return findings[:limit], len(findings) > limit

    def items(self, inputs: Sequence[Message]) -> dict[str, str]:
        """Each file's path → the digest of its text."""
        return {path: digest for path, digest, _ in _input_files(inputs)}

    def process_items(
        self, inputs: Sequence[Message], keys: Set[str], properties: dict[str, Any]
    ) -> dict[str, Any]:
        """Findings (and whether they were cut at the limit) of the files in `keys`."""
        options = resolve_properties(self.type, self.properties_schema, properties)
        scanner = PersonalDataProcessor(options["categories"], options["max_findings_per_file"])
        results: dict[str, Any] = {}
        for path, _, text in _input_files(inputs):
            if path in keys:
                found, cut = scanner.scan_counted(path, text)
                results[path] = {"findings": found, "truncated": cut}
        return results

    def split(self, content: dict[str, Any], keys: Set[str]) -> dict[str, Any]:
        """Per-file results from an earlier output: its findings grouped by file."""
        truncated = set(content["summary"]["files_truncated"])
        results: dict[str, Any] = {
            path: {"findings": [], "truncated": path in truncated} for path in keys
        }
        for finding in content["findings"]:
            if finding["file"] in results:
                results[finding["file"]]["findings"].append(finding)
        return results

    def combine(
        self, inputs: Sequence[Message], results: dict[str, Any], properties: dict[str, Any]
    ) -> dict[str, Any]:
        """Every file's findings in one sorted list, with the summary."""
        options = resolve_properties(self.type, self.properties_schema, properties)
        findings: list[Finding] = [f for result in results.values() for f in result["findings"]]
        findings.sort(key=_order)
        by_category = Counter(dict.fromkeys(options["categories"], 0))
        by_category.update(finding["category"] for finding in findings)
        summary = {
            "files_scanned": len(results),
            "files_skipped": sum(len(m.content.get("skipped", [])) for m in inputs),
            "findings": len(findings),
            "by_category": dict(sorted(by_category.items())),
            "files_truncated": sorted(path for path, r in results.items() if r["truncated"]),
        }
        return {"findings": findings, "summary": summary}


def _matches(text: str) -> Iterator[tuple[int, Rule, str]]:
    """(offset, rule, value) of every accepted match, earlier rules claiming first."""
    claims = _Claims()
    for rule in RULES:
        if rule.hint and rule.hint not in text:
            continue
        yield from _rule_matches(rule, text, claims)


def _rule_matches(rule: Rule, text: str, claims: _Claims) -> Iterator[tuple[int, Rule, str]]:
    # Not finditer: a check may accept only a prefix of a match (a card number followed
    # by an expiry date) or nothing, and the rest may still start a value of its own.
    match = rule.search(text, 0)
    while match is not None:
        start = match.start()
        value = rule.check(match.group())
        if value is not None and claims.claim(start, start + len(value)):
            yield start, rule, value
        match = rule.search(text, start + len(value) if value else start + 1)


def _input_files(inputs: Sequence[Message]) -> Iterator[tuple[str, str, str]]:
    """(path, digest of the text, text) of every file of every input."""
    for message in inputs:
        files = message.content.get("files")
        if not isinstance(files, list):
            raise InvalidInputError(f"input {message.id!r} has no 'files' list (file_content)")
        for entry in files:
            text = entry["content"]
            digest = entry.get("digest") or Digest.of(text.encode()).hex
            yield entry["path"], digest, text


def _findings_of(message: Message) -> list[dict[str, Any]] | None:
    findings = message.content.get("findings")
    return findings if isinstance(findings, list) else None


def _summary(message: Message) -> dict[str, Any]:
    summary = message.content.get("summary")
    return summary if isinstance(summary, dict) else {}


def _total(messages: Sequence[Message], field: str) -> int:
    return sum(_summary(message).get(field, 0) for message in messages)


def _by_category(messages: Sequence[Message], findings: list[dict[str, Any]]) -> dict[str, int]:
    """Findings per category; categories an input checked but found nothing in count 0."""
    counts: Counter[str] = Counter()
    for message in messages:
        counts.update(dict.fromkeys(_summary(message).get("by_category", {}), 0))
    counts.update(finding["category"] for finding in findings)
    return dict(sorted(counts.items()))


def _per_file(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[str, Counter[str]] = {}
    for finding in findings:
        counts.setdefault(finding["file"], Counter())[finding["category"]] += 1
    return [
        {"file": name, "findings": sum(found.values()), "by_category": dict(sorted(found.items()))}
        for name, found in sorted(counts.items())
    ]


_NO_PROPERTIES: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {},
}


class SummaryProcessor(Processor):
    """Counts findings by category, rule and file across the inputs that have ``findings``."""

    type: ClassVar[str] = "summary"
    version: ClassVar[str] = "1.0.0"
    output_schema: ClassVar[SchemaRef] = SUMMARY
    properties_schema: ClassVar[dict[str, Any]] = _NO_PROPERTIES

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        """Totals, ``by_category``, ``by_rule`` and a ``files`` list sorted by file."""
        resolve_properties(self.type, self.properties_schema, properties)
        used = [message for message in inputs if _findings_of(message) is not None]
        findings = [finding for message in used for finding in _findings_of(message) or []]
        files = _per_file(findings)
        return {
            "inputs": len(used),
            "files_scanned": _total(used, "files_scanned"),
            "files_with_findings": len(files),
            "findings": len(findings),
            "by_category": _by_category(used, findings),
            "by_rule": dict(sorted(Counter(finding["rule"] for finding in findings).items())),
            "files": files,
        }


class MergeProcessor(Processor):
    """Merges the findings of several inputs (deduplicated, sorted) and sums their summaries."""

    type: ClassVar[str] = "merge"
    version: ClassVar[str] = "1.0.0"
    output_schema: ClassVar[SchemaRef] = MERGED
    input_schemas: ClassVar[tuple[SchemaRef, ...]] = (FINDINGS, MERGED)
    properties_schema: ClassVar[dict[str, Any]] = _NO_PROPERTIES

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        """``{inputs, findings, summary}``; finding counts come from the merged list."""
        resolve_properties(self.type, self.properties_schema, properties)
        unique: dict[bytes, dict[str, Any]] = {}
        for message in inputs:
            findings = _findings_of(message)
            if findings is None:
                raise InvalidInputError(f"input {message.id!r} has no 'findings' list")
            unique.update((canonical_json(finding), finding) for finding in findings)
        merged = sorted(unique.values(), key=_order)
        truncated = {path for m in inputs for path in _summary(m).get("files_truncated", [])}
        summary = {
            "files_scanned": _total(inputs, "files_scanned"),
            "files_skipped": _total(inputs, "files_skipped"),
            "findings": len(merged),
            "by_category": _by_category(inputs, merged),
            "files_truncated": sorted(truncated),
        }
        return {"inputs": len(inputs), "findings": merged, "summary": summary}

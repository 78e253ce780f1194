"""The personal-data, summary and merge processors: rules, masking, determinism, schemas."""

from __future__ import annotations

import importlib
import re
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from executor_support.schemas import assert_valid, schema_of

from cas.connectors import FilesystemConnector
from cas.digest import canonical_json
from cas.errors import InvalidInputError
from cas.model import Message, SchemaRef
from cas.objects import LocalBackend
from cas.plugins import Processor
from cas.processors import (
    CATEGORIES,
    FINDINGS,
    MERGED,
    SUMMARY,
    MergeProcessor,
    PersonalDataProcessor,
    SummaryProcessor,
    card_valid,
    iban_valid,
    ipv4_valid,
    ipv6_valid,
    luhn_valid,
    nino_valid,
    ssn_valid,
)
from cas.schemas import SchemaRegistry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "data"
SCANNER = PersonalDataProcessor()

POSITIVES: list[tuple[str, str]] = [
    ("email", "alice.smith@example.com"),
    ("email", "bob+news@example.org"),
    ("email", "x_y@mail.example.net"),
    ("email", "ops@corp.example"),
    ("phone_international", "+44 20 7946 0958"),
    ("phone_international", "+1 (202) 555-0143"),
    ("phone_international", "+1-202-555-0110"),
    ("phone_international", "+33 1 23 45 67 89"),
    ("phone_international", "+49 30 901820"),
    ("phone_international", "+442079460958"),
    ("phone_international", "+81 3 5550 1234"),
    ("phone_us", "(202) 555-0178"),
    ("phone_us", "(202)555-0147"),
    ("phone_us", "202-555-0199"),
    ("phone_us", "312.555.0133"),
    ("phone_uk", "020 7946 0123"),
    ("phone_uk", "07700 900456"),
    ("phone_uk", "0161 496 0123"),
    ("phone_fr", "01 23 45 67 89"),
    ("phone_fr", "06.12.34.56.78"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "GB82WEST12345698765432"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "FR14 2004 1010 0505 0001 3M02 606"),
    ("iban", "NL91ABNA0417164300"),
    ("iban", "BE68 5390 0754 7034"),
    ("iban", "CH93 0076 2011 6238 5295 7"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "4111-1111-1111-1111"),
    ("credit_card", "4111111111111111"),
    ("credit_card", "5555 5555 5555 4444"),
    ("credit_card", "3782 822463 10005"),
    ("credit_card", "6011 1111 1111 1117"),
    ("credit_card", "3530111333300000"),
    ("credit_card", "4222222222222"),
    ("credit_card", "2223 0031 2200 3222"),
    ("ipv4", "192.0.2.10"),
    ("ipv4", "198.51.100.23"),
    ("ipv4", "203.0.113.7"),
    ("ipv6", "2001:db8::1"),
    ("ipv6", "2001:db8:85a3::8a2e:370:7334"),
    ("ipv6", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("ipv6", "fe80::1:2:3"),
    ("us_ssn", "536-80-4398"),
    ("us_ssn", "472-19-8821"),
    ("uk_nino", "AB 12 34 56 C"),
    ("uk_nino", "JG103759A"),
    ("uk_nino", "CE 45 67 89 B"),
]

LOOK_ALIKES: list[str] = [
    "4111 1111 1111 1112",  # Luhn fails
    "1234 5678 9012 3456",  # no card issuer starts with 1
    "0000 0000 0000 0000",
    "epoch 1710411751000 ms",
    "order ORD-2024-000123",
    "ticket #1234567890123456",
    "2024-01-15",
    "15/01/2024",
    "15.01.2024",
    "2024-03-14T10:22:31Z",
    "[14/Mar/2024:10:22:31 +0000]",
    "at 10:30:00 or 16:30",
    "version 1.2.3",
    "v10.4.2.1",
    "2.0.0-rc.1",
    "Chrome/122.0.6261.94",
    "999.1.1.1",
    "10.0.0.256",
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "01.02.03.04",
    "::1",
    "MAC 00:1a:2b:3c:4d:5e",
    "std::vector<int>",
    "GB00 WEST 1234 5698 7654 32",  # mod-97 fails
    "XX12 3456 7890 1234 5678",  # no such country
    "GB82 WEST 1234 5698 7654",  # too short for GB
    "000-12-3456",
    "666-45-6789",
    "912-34-5678",
    "536-00-4398",
    "536-80-0000",
    "078-05-1120",
    "QQ123456C",
    "BG123456A",
    "AB123456E",
    "DA123456A",
    "AO123456A",
    "icon@2x.png",
    "lodash@4.17.21",
    "user at example dot com",
    "postgresql://app:secret@db.example.internal/shop",
    "12345678901",
    "+1 2",
    "ISBN 978-0-306-40615-7",
    "123e4567-e89b-12d3-a456-426614174000",
    "amount 1,234,567.89",
    "**** **** **** 1111 and j***@e******.com",
]

MASKS: list[tuple[str, str]] = [
    ("john.doe@example.com", "j***@e******.com"),
    ("4111 1111 1111 1111", "**** **** **** 1111"),
    ("378282246310005", "**** **** **** 0005"),
    ("GB82 WEST 1234 5698 7654 32", "GB** **** **** **** **54 32"),
    ("536-80-4398", "***-**-4398"),
    ("AB 12 34 56 C", "AB ** ** ** *"),
    ("+44 20 7946 0958", "+44 ** **** **58"),
    ("(202) 555-0178", "(***) ***-**78"),
    ("192.0.2.10", "192.0.*.*"),
    ("2001:db8::1", "2001:db8:*:*:*:*:*:*"),
]

EXAMPLE_COUNTS = {
    "credit_card": 11,
    "email": 36,
    "iban": 13,
    "ip_address": 22,
    "national_id": 8,
    "phone": 29,
}
CLEAN_EXAMPLES = {
    "README.md",
    "config/logging.ini",
    "data/metrics.csv",
    "data/orders.csv",
    "docs/CHANGELOG.md",
    "docs/architecture.md",
    "docs/privacy.md",
    "notes/todo.txt",
    "src/db/migrations/0003_add_phone.sql",
    "src/utils/helpers.py",
}


def file_message(content: dict[str, Any], message_id: str = "file_content") -> Message:
    """A ``file_content`` message."""
    return Message(message_id, content, schema=SchemaRef("file_content", "1.0.0"))


def files_content(tree: dict[str, str]) -> dict[str, Any]:
    """``file_content`` for an in-memory tree (digest and size are not used by the scan)."""
    entries = [
        {"path": path, "size": len(text), "digest": "0" * 64, "content": text}
        for path, text in sorted(tree.items())
    ]
    return {"root": "mem", "files": entries, "skipped": []}


def scan_tree(tree: dict[str, str], **properties: Any) -> dict[str, Any]:
    """Run the personal-data processor over an in-memory tree."""
    return PersonalDataProcessor().process([file_message(files_content(tree))], properties)


def scan_examples() -> tuple[dict[str, Any], dict[str, Any]]:
    """The example runbook's first two steps: (file_content, personal_data_findings)."""
    content = FilesystemConnector().extract({"path": str(EXAMPLES), "exclude": ["**/*.bin"]})
    return content, PersonalDataProcessor().process([file_message(content)], {})


def digits(text: str) -> str:
    """The digits of `text`."""
    return re.sub(r"\D", "", text)


# --- validators -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("79927398713", True),
        ("79927398710", False),
        ("4111111111111111", True),
        ("0", True),
        ("4111111111111112", False),
        ("", False),
        ("12a4", False),
    ],
)
def test_luhn(number: str, expected: bool) -> None:
    assert luhn_valid(number) is expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("4111111111111111", True),
        ("378282246310005", True),
        ("4222222222222", True),
        ("0000000000000000", False),
        ("1234567890123452", False),
        ("411111111111", False),
        ("41111111111111111111", False),
        ("9111111111111119", False),
    ],
)
def test_card_valid(number: str, expected: bool) -> None:
    assert card_valid(number) is expected


@pytest.mark.parametrize(
    ("iban", "expected"),
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("GB82WEST12345698765432", True),
        ("NO9386011117947", True),
        ("GB83WEST12345698765432", False),
        ("GB82WEST1234569876543", False),
        ("XX82WEST12345698765432", False),
        ("GBAAWEST12345698765432", False),
        ("GB82-WEST-1234-5698-7654-32", False),
    ],
)
def test_iban_valid(iban: str, expected: bool) -> None:
    assert iban_valid(iban) is expected


@pytest.mark.parametrize(
    ("ssn", "expected"),
    [
        ("536-80-4398", True),
        ("899-99-9999", True),
        ("000-12-3456", False),
        ("666-12-3456", False),
        ("900-12-3456", False),
        ("999-12-3456", False),
        ("536-00-4398", False),
        ("536-80-0000", False),
        ("536804398", False),
    ],
)
def test_ssn_valid(ssn: str, expected: bool) -> None:
    assert ssn_valid(ssn) is expected


@pytest.mark.parametrize(
    ("nino", "expected"),
    [
        ("AB123456C", True),
        ("AB 12 34 56 C", True),
        ("QQ123456C", False),
        ("GB123456A", False),
        ("AO123456A", False),
        ("AB123456E", False),
        ("AB12345C", False),
    ],
)
def test_nino_valid(nino: str, expected: bool) -> None:
    assert nino_valid(nino) is expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.0.2.1", True),
        ("8.8.8.8", True),
        ("256.1.1.1", False),
        ("01.2.3.4", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
    ],
)
def test_ipv4_valid(address: str, expected: bool) -> None:
    assert ipv4_valid(address) is expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("2001:db8::1", True),
        ("2001:db8:0:0:0:0:0:1", True),
        ("::1", False),
        ("::", False),
        ("a::b", False),
        ("2001:db8::g", False),
        ("1:2:3:4:5:6:7:8:9", False),
    ],
)
def test_ipv6_valid(address: str, expected: bool) -> None:
    assert ipv6_valid(address) is expected


# --- rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "value"), POSITIVES)
@pytest.mark.parametrize("template", ["{}", "see {}, thanks", "x,{},y", "({})"])
def test_each_rule_finds_its_planted_values(rule: str, value: str, template: str) -> None:
    findings = SCANNER.scan_file("f.txt", template.format(value))
    assert [finding["rule"] for finding in findings] == [rule]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_are_not_reported(text: str) -> None:
    assert SCANNER.scan_file("f.txt", f"note: {text} end\n") == []


@pytest.mark.parametrize(("value", "evidence"), MASKS)
def test_evidence_is_masked(value: str, evidence: str) -> None:
    assert [finding["evidence"] for finding in SCANNER.scan_file("f", value)] == [evidence]


@pytest.mark.parametrize(("rule", "value"), POSITIVES)
def test_masking_never_leaks_the_full_value(rule: str, value: str) -> None:
    (finding,) = SCANNER.scan_file("f", value)
    evidence = finding["evidence"]
    assert value not in evidence
    assert evidence.count("*") >= 2
    if rule in ("ipv4", "ipv6"):  # the network part stays: the host part is hidden
        assert evidence.endswith(".*.*" if rule == "ipv4" else ":*" * 6)
    elif len(digits(value)) >= 6:
        assert digits(value) not in digits(evidence)
        assert len(digits(evidence)) <= 4


def test_findings_carry_line_and_column() -> None:
    text = (
        "intro\nmail a@example.com here\n\n  card 4111 1111 1111 1111\nip 192.0.2.1 and 192.0.2.2\n"
    )
    for newline in ("\n", "\r\n"):
        found = SCANNER.scan_file("f", text.replace("\n", newline))
        places = [(f["line"], f["column"], f["rule"]) for f in found]
        expected = [(2, 6, "email"), (4, 8, "credit_card"), (5, 4, "ipv4"), (5, 18, "ipv4")]
        assert places == expected


def test_a_card_followed_by_an_expiry_date_is_found() -> None:
    found = SCANNER.scan_file(
        "f", "card 4111 1111 1111 1111 12 25 and 1710411751000 4242 4242 4242 4242"
    )
    assert [f["evidence"] for f in found] == ["**** **** **** 1111", "**** **** **** 4242"]


def test_digits_claimed_by_an_iban_are_not_reported_again() -> None:
    text = "pay DE89 3704 0044 0532 0130 00 now"
    assert [f["rule"] for f in SCANNER.scan_file("f", text)] == ["iban"]
    others = PersonalDataProcessor(categories=["phone", "credit_card"])
    assert others.scan_file("f", text) == []


def test_categories_filter_and_limit() -> None:
    tree = {"a.txt": "".join(f"u{i}@example.com 192.0.2.{i}\n" for i in range(1, 6))}
    emails = scan_tree(tree, categories=["email"])
    assert {f["category"] for f in emails["findings"]} == {"email"}
    assert emails["summary"]["by_category"] == {"email": 5}
    limited = scan_tree(tree, max_findings_per_file=3)
    assert [(f["line"], f["category"]) for f in limited["findings"]] == [
        (1, "email"),
        (1, "ip_address"),
        (2, "email"),
    ]
    assert limited["summary"]["files_truncated"] == ["a.txt"]
    assert limited["summary"]["findings"] == 3


@pytest.mark.parametrize(
    "properties",
    [{"categories": ["bogus"]}, {"max_findings_per_file": 0}, {"rules": []}],
)
def test_bad_properties_are_invalid_input(properties: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="invalid properties for 'personal_data'"):
        scan_tree({}, **properties)


def test_an_input_without_files_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="has no 'files' list"):
        PersonalDataProcessor().process([Message("x", {"other": 1})], {})


def test_process_equals_scan_file_per_file() -> None:
    tree = {"b.txt": "b@example.com\n", "a.txt": "x\n536-80-4398\n", "c.txt": "none\n"}
    result = scan_tree(tree)
    per_file = [f for path in sorted(tree) for f in SCANNER.scan_file(path, tree[path])]
    assert result["findings"] == per_file
    assert result["summary"] == {
        "files_scanned": 3,
        "files_skipped": 0,
        "findings": 2,
        "by_category": {**dict.fromkeys(CATEGORIES, 0), "email": 1, "national_id": 1},
        "files_truncated": [],
    }


# --- the bundled example ------------------------------------------------------------------


def test_example_scan_is_deterministic() -> None:
    first = [canonical_json(part) for part in scan_examples()]
    second = [canonical_json(part) for part in scan_examples()]
    assert first == second


def test_example_scan_finds_every_category_and_spares_the_look_alikes() -> None:
    content, result = scan_examples()
    assert result["summary"]["by_category"] == EXAMPLE_COUNTS
    assert result["summary"]["files_skipped"] == 1
    hit = {finding["file"] for finding in result["findings"]}
    assert {entry["path"] for entry in content["files"]} - hit == CLEAN_EXAMPLES
    texts = {entry["path"]: entry["content"].splitlines() for entry in content["files"]}
    for finding in result["findings"]:
        line = texts[finding["file"]][finding["line"] - 1]
        assert finding["evidence"] not in line  # what the line holds is never shown as is
    keys = [(f["file"], f["line"], f["category"], f["evidence"]) for f in result["findings"]]
    assert keys == sorted(keys)


def test_example_outputs_validate_against_the_bundled_schemas() -> None:
    content, findings = scan_examples()
    assert_valid("file_content", content)
    assert_valid("personal_data_findings", findings)
    message = Message("findings", findings, schema=FINDINGS)
    assert_valid("summary", SummaryProcessor().process([message], {}))
    assert_valid("merged", MergeProcessor().process([message, message], {}))


def test_schema_registry_serves_the_bundled_schemas(tmp_path: Path) -> None:
    registry = SchemaRegistry(LocalBackend(tmp_path), packages=["cas.builtin_schemas"])
    names = {ref.name for ref, _ in registry.list()}
    assert {"file_content", "personal_data_findings", "summary", "merged"} <= names
    _, findings = scan_examples()
    assert registry.validate(FINDINGS, findings)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["findings"][0].update(value="4111111111111111"),
        lambda c: c["findings"][0].pop("evidence"),
        lambda c: c["findings"][0].update(line=0),
        lambda c: c["findings"][0].update(category="shoe_size"),
        lambda c: c["summary"].update(extra=1),
    ],
)
def test_the_findings_schema_is_strict(change: Any) -> None:
    _, findings = scan_examples()
    change(findings)
    with pytest.raises(jsonschema.ValidationError):
        assert_valid("personal_data_findings", findings)


# --- summary and merge --------------------------------------------------------------------


def test_summary_counts_by_category_rule_and_file() -> None:
    tree = {"a.txt": "a@example.com\n192.0.2.1\n", "b.txt": "b@example.com\n", "c.txt": ""}
    findings = Message("findings", scan_tree(tree), schema=FINDINGS)
    other = file_message(files_content(tree))
    summary = SummaryProcessor().process([findings, other], {})
    assert summary == {
        "inputs": 1,
        "files_scanned": 3,
        "files_with_findings": 2,
        "findings": 3,
        "by_category": {**dict.fromkeys(CATEGORIES, 0), "email": 2, "ip_address": 1},
        "by_rule": {"email": 2, "ipv4": 1},
        "files": [
            {"file": "a.txt", "findings": 2, "by_category": {"email": 1, "ip_address": 1}},
            {"file": "b.txt", "findings": 1, "by_category": {"email": 1}},
        ],
    }
    assert_valid("summary", summary)


def test_merge_deduplicates_sorts_and_sums() -> None:
    first = scan_tree({"a.txt": "a@example.com\n", "b.txt": "192.0.2.1\n"})
    second = scan_tree({"b.txt": "192.0.2.1\n", "c.txt": "536-80-4398\n"})
    inputs = [Message("one", second, schema=FINDINGS), Message("two", first, schema=FINDINGS)]
    merged = MergeProcessor().process(inputs, {})
    assert [(f["file"], f["rule"]) for f in merged["findings"]] == [
        ("a.txt", "email"),
        ("b.txt", "ipv4"),
        ("c.txt", "us_ssn"),
    ]
    assert merged["inputs"] == 2
    assert merged["summary"]["files_scanned"] == 4
    assert merged["summary"]["findings"] == 3
    assert merged["summary"]["by_category"]["ip_address"] == 1
    assert_valid("merged", merged)
    again = MergeProcessor().process([Message("m", merged, schema=MERGED), inputs[0]], {})
    assert again["findings"] == merged["findings"]


def test_merge_refuses_an_input_without_findings() -> None:
    with pytest.raises(InvalidInputError, match="input 'x' has no 'findings' list"):
        MergeProcessor().process([Message("x", {"files": []})], {})


# --- declarations -------------------------------------------------------------------------

PLUGINS: list[tuple[str, type[Processor], SchemaRef]] = [
    ("personal_data", PersonalDataProcessor, FINDINGS),
    ("summary", SummaryProcessor, SUMMARY),
    ("merge", MergeProcessor, MERGED),
]


@pytest.mark.parametrize(("name", "plugin", "output"), PLUGINS)
def test_plugin_declarations(name: str, plugin: type[Processor], output: SchemaRef) -> None:
    assert (plugin.type, plugin.output_schema) == (name, output)
    jsonschema.Draft202012Validator.check_schema(plugin.properties_schema)
    assert all("default" in spec for spec in plugin.properties_schema["properties"].values())
    schema_of(output.name)  # bundled
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, attribute = project["project"]["entry-points"]["cas.processors"][name].partition(":")
    assert getattr(importlib.import_module(module), attribute) is plugin


def test_scan_speed_sanity(tmp_path: Path) -> None:
    """2,000 files of ~2 KB: measured, printed, not asserted (timing varies by machine)."""
    line = "2024-03-14 INFO order ORD-2024-{:06d} processed in 12.5 ms for customer {}\n"
    tree = {
        f"logs/{i // 100:02d}/file{i:04d}.log": "".join(line.format(i, j) for j in range(26))
        + f"contact u{i}@example.com from 192.0.2.{i % 250 + 1}\n"
        for i in range(2000)
    }
    for relative, text in tree.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    started = time.perf_counter()
    content = FilesystemConnector().extract({"path": str(tmp_path)})
    read = time.perf_counter()
    result = PersonalDataProcessor().process([file_message(content)], {})
    done = time.perf_counter()
    size = sum(entry["size"] for entry in content["files"])
    print(
        f"\nscan speed: {len(content['files'])} files, {size / 1e6:.1f} MB: "
        f"read {read - started:.2f} s, scan {done - read:.2f} s"
    )
    assert Counter(f["category"] for f in result["findings"]) == {"email": 2000, "ip_address": 2000}

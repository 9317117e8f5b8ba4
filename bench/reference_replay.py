#!/usr/bin/env python3
"""A reference replay in plain Python: what a team would write by hand to audit ECR replication
from archived EventBridge events, with the same rules as `ecr-replication-auditor replay`.

One JSON document per line, dicts all the way, everything kept in memory until the end. It is
the yardstick for the Rust replay's speed (bench/compare runs both on the same file) and a second,
independent implementation of the verdict rules: both must agree on every per-destination count.

    python3 bench/reference_replay.py --registry us-west-2=FILE [--registry ...]
                                      [--window SECONDS] [--format table|json] EVENTS.jsonl

Rules (README, "How verdicts are reached"):
- a push is `aws.ecr` `ECR Image Action` PUSH SUCCESS, a delete DELETE SUCCESS; a copy is
  `ECR Replication Action` REPLICATE SUCCESS or FAILED (its envelope account and Region are the
  destination); any other well-formed event is ignored; a record with a missing or malformed
  field is rejected, and so is a push, copy or delete dated more than a horizon (24 hours) ahead
  of the latest push, copy or delete time read so far; a record whose id was already seen is a
  duplicate, whatever else it is;
- a push in a registry and Region that a group of the same repository and digest, from a source
  whose rules name it (or that its own rules name), is still waiting for a copy of (an earlier
  push of that tag, or by digest, without a successful copy) is that copy, not a push;
- a push expects the deduplicated destinations of its Region's rules that cover the repository
  (no filter, or a filter that is a prefix of the name), minus its own registry and Region;
- one expectation per (source, repository, digest, tag, destination), at the earliest push;
  a tagged copy matches the expectation of its tag (or the push by digest); an untagged copy,
  in time order, the earliest expectation pushed no later than a minute after it that had no
  successful copy by then;
- verdict: with a successful copy, `untagged` (tag pushed, not carried, and no push of that tag
  naming another digest between the push and the copy), `late` (> window) or `replicated`;
  without, `failed` (a FAILED result seen), `withdrawn` (the image, or its tag, deleted at the
  source within the window), `missing` (window passed at `now`, the latest event time) or
  `pending`.

No streaming and no retirement of settled groups: the whole stream's state stays in dicts.
"""

import argparse
import datetime
import json
import re
import sys

REPOSITORY = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
ACCOUNT = re.compile(r"[0-9]{12}")
REGION = re.compile(r"[0-9a-z-]{2,25}")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MILLISECOND = datetime.timedelta(milliseconds=1)
STATUSES = ["replicated", "late", "untagged", "failed", "missing", "pending", "withdrawn"]
HORIZON_MS = 24 * 3600 * 1000


class Rejected(Exception):
    pass


def opaque(value, limit):
    """Digests, tags and ids: 1..limit printable characters, no whitespace."""
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise Rejected()
    if any(c.isspace() or not c.isprintable() for c in value):
        raise Rejected()
    return value


def text(obj, key):
    value = obj.get(key)
    if not isinstance(value, str):
        raise Rejected()
    return value


def pattern(obj, key, regex):
    value = text(obj, key)
    if not regex.fullmatch(value):
        raise Rejected()
    return value


def repository(obj):
    value = pattern(obj, "repository-name", REPOSITORY)
    if not 2 <= len(value) <= 256:
        raise Rejected()
    return value


def millis(value):
    """RFC 3339 with a zone (Z or an offset) -> milliseconds since the epoch."""
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt ":
        raise Rejected()
    try:
        t = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise Rejected() from None
    if t.tzinfo is None:
        raise Rejected()
    return (t - EPOCH) // MILLISECOND


def optional_tag(detail):
    tag = detail.get("image-tag")
    if tag is None or tag == "":
        return None
    return opaque(tag, 300)


def classify(record):
    """-> (kind, id, fields): kind is push, delete, copy, ignored or rejected."""
    if not isinstance(record, dict):
        return "rejected", None, None
    event_id = record.get("id")
    try:
        opaque(event_id, 256)
    except Rejected:
        return "rejected", None, None
    try:
        source = text(record, "source")
        detail_type = text(record, "detail-type")
        if source != "aws.ecr" or detail_type not in ("ECR Image Action", "ECR Replication Action"):
            return "ignored", event_id, ignored_time(record)
        detail = record.get("detail")
        if not isinstance(detail, dict):
            raise Rejected()
        action = text(detail, "action-type")
        result = text(detail, "result")
        if detail_type == "ECR Image Action":
            if action not in ("PUSH", "DELETE") or result != "SUCCESS":
                return "ignored", event_id, ignored_time(record)
            return action.lower(), event_id, {
                "id": event_id,
                "at": millis(record.get("time")),
                "account": pattern(record, "account", ACCOUNT),
                "region": pattern(record, "region", REGION),
                "repository": repository(detail),
                "digest": opaque(detail.get("image-digest"), 512),
                "tag": optional_tag(detail),
            }
        if action != "REPLICATE" or result not in ("SUCCESS", "FAILED"):
            return "ignored", event_id, ignored_time(record)
        return "copy", event_id, {
            "id": event_id,
            "at": millis(record.get("time")),
            "destination": (pattern(record, "account", ACCOUNT), pattern(record, "region", REGION)),
            "source_account": pattern(detail, "source-account", ACCOUNT),
            "source_region": pattern(detail, "source-region", REGION),
            "repository": repository(detail),
            "digest": opaque(detail.get("image-digest"), 512),
            "tag": optional_tag(detail),
            "succeeded": result == "SUCCESS",
        }
    except Rejected:
        return "rejected", event_id, None


def ignored_time(record):
    try:
        return millis(record.get("time"))
    except Rejected:
        return None


def load_registry(argument):
    region, path = argument.split("=", 1)
    with open(path) as f:
        doc = json.load(f)
    rules = []
    for rule in doc.get("replicationConfiguration", {}).get("rules", []):
        destinations = [(d["registryId"], d["region"]) for d in rule["destinations"]]
        prefixes = [f["filter"] for f in rule.get("repositoryFilters") or []]
        rules.append((destinations, prefixes))
    return (doc["registryId"], region), rules


def expected_destinations(rules, source, name):
    out = []
    for destinations, prefixes in rules:
        if not prefixes or any(name.startswith(p) for p in prefixes):
            for d in destinations:
                if d not in out and d != source:
                    out.append(d)
    return out


def resolve(expectations, copies, deletions=()):
    """Matches a group's copies to its expectations: (evidence per expectation, unmatched)."""
    evidence = [
        {"success": None, "carried": False, "failed": False, "withdrawn": None}
        for _ in expectations
    ]
    unmatched = 0

    def record(e, copy, carried):
        if copy["succeeded"]:
            if e["success"] is None or copy["at"] < e["success"]:
                e["success"], e["carried"] = copy["at"], carried
        else:
            e["failed"] = True

    untagged = []
    for copy in copies:
        if copy["tag"] is None:
            untagged.append(copy)
            continue
        target = next((i for i, x in enumerate(expectations) if x["tag"] == copy["tag"]), None)
        if target is None:
            target = next((i for i, x in enumerate(expectations) if x["tag"] is None), None)
        if target is None:
            unmatched += 1
        else:
            record(evidence[target], copy, True)
    untagged.sort(key=lambda c: (c["at"], not c["succeeded"], c["id"]))
    for copy in untagged:
        # What was known a minute after the copy decides: the earliest push by then that had no
        # successful copy by then.
        by = copy["at"] + 60_000
        target = next(
            (
                i
                for i, (x, e) in enumerate(zip(expectations, evidence))
                if x["pushed_at"] <= by and (e["success"] is None or e["success"] > by)
            ),
            None,
        )
        if target is not None:
            record(evidence[target], copy, expectations[target]["tag"] is None)
        elif not expectations:
            unmatched += 1
    for expectation, e in zip(expectations, evidence):
        times = [
            at
            for tag, at in deletions
            if (tag is None or tag == expectation["tag"]) and at >= expectation["pushed_at"]
        ]
        e["withdrawn"] = min(times) if times else None
    return evidence, unmatched


def sorted_expectations(group):
    return sorted(
        group["expectations"], key=lambda e: (e["pushed_at"], e["tag"] is not None, e["tag"] or "")
    )


def awaits_copy(group, tag, at):
    """Whether a push of the group's digest (carrying `tag`) at `at` can be its copy landing."""
    expectations = sorted_expectations(group)
    evidence, _ = resolve(expectations, group["copies"])
    return any(
        e["success"] is None
        and x["pushed_at"] <= at
        and (tag is None or x["tag"] is None or x["tag"] == tag)
        for x, e in zip(expectations, evidence)
    )


def verdict(expectation, evidence, window_ms, now, moved_on):
    if evidence["success"] is not None:
        lag = evidence["success"] - expectation["pushed_at"]
        if expectation["tag"] is not None and not evidence["carried"] and not moved_on:
            return "untagged", lag
        return ("late" if lag > window_ms else "replicated"), lag
    if evidence["failed"]:
        return "failed", None
    withdrawn = evidence["withdrawn"]
    if withdrawn is not None and withdrawn - expectation["pushed_at"] <= window_ms:
        return "withdrawn", None
    return ("missing" if now - expectation["pushed_at"] > window_ms else "pending"), None


def nearest_rank(values, p):
    return values[max(1, min(len(values), -(-p * len(values) // 100))) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", action="append", default=[], metavar="REGION=FILE")
    parser.add_argument("--window", type=int, default=1800, metavar="SECONDS")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("events")
    args = parser.parse_args()
    window_ms = args.window * 1000
    configs = dict(load_registry(r) for r in args.registry)

    counts = dict.fromkeys(
        ["read", "push", "replication", "delete", "ignored", "rejected", "duplicate"], 0
    )
    seen = set()
    groups = {}  # (source account, source Region, repository, digest, destination) -> group
    deletions = {}  # (source account, source Region, repository, digest) -> [(tag, at)]
    tag_pushes = {}  # (source account, source Region, repository, tag) -> [(at, digest)]
    unconfigured = {}
    now = None
    clock = None  # the latest push, copy or delete time read: the stream's clock

    with open(args.events, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            counts["read"] += 1
            try:
                record = json.loads(line)
            except ValueError:
                counts["rejected"] += 1
                continue
            kind, event_id, fields = classify(record)
            if kind in ("push", "copy", "delete") and clock is not None:
                if fields["at"] - clock > HORIZON_MS:
                    kind = "rejected"
            if event_id is not None:
                if event_id in seen:
                    counts["duplicate"] += 1
                    continue
                seen.add(event_id)
            if kind == "rejected":
                counts["rejected"] += 1
                continue
            if kind == "ignored":
                counts["ignored"] += 1
                if fields is not None:
                    now = fields if now is None else max(now, fields)
                continue
            now = fields["at"] if now is None else max(now, fields["at"])
            clock = fields["at"] if clock is None else max(clock, fields["at"])
            if kind == "delete":
                counts["delete"] += 1
                image = (fields["account"], fields["region"], fields["repository"], fields["digest"])
                deletions.setdefault(image, []).append((fields["tag"], fields["at"]))
                continue
            if kind == "push":
                counts["push"] += 1
                here = (fields["account"], fields["region"])
                sources = set(
                    expected_destinations(configs.get(here, []), here, fields["repository"])
                )
                for registry, rules in configs.items():
                    if here in expected_destinations(rules, registry, fields["repository"]):
                        sources.add(registry)
                landed = False
                for s in sources:
                    key = s + (fields["repository"], fields["digest"], here)
                    group = groups.get(key)
                    if group is not None and awaits_copy(group, fields["tag"], fields["at"]):
                        group["copies"].append(dict(fields, succeeded=True))
                        landed = True
                if landed:
                    continue
                source = here
                if source not in configs:
                    unconfigured[source] = unconfigured.get(source, 0) + 1
                    continue
                for destination in expected_destinations(
                    configs[source], source, fields["repository"]
                ):
                    key = source + (fields["repository"], fields["digest"], destination)
                    group = groups.setdefault(key, {"expectations": [], "copies": []})
                    same = [e for e in group["expectations"] if e["tag"] == fields["tag"]]
                    if same:
                        same[0]["pushed_at"] = min(same[0]["pushed_at"], fields["at"])
                    else:
                        group["expectations"].append({"tag": fields["tag"], "pushed_at": fields["at"]})
                if fields["tag"] is not None:
                    tag = source + (fields["repository"], fields["tag"])
                    tag_pushes.setdefault(tag, []).append((fields["at"], fields["digest"]))
            else:
                counts["replication"] += 1
                key = (
                    fields["source_account"],
                    fields["source_region"],
                    fields["repository"],
                    fields["digest"],
                    fields["destination"],
                )
                group = groups.setdefault(key, {"expectations": [], "copies": []})
                group["copies"].append(fields)

    destinations = {}
    unmatched = 0
    for key, group in groups.items():
        expectations = sorted_expectations(group)
        evidence, lost = resolve(expectations, group["copies"], deletions.get(key[:4], ()))
        unmatched += lost
        if not expectations:
            continue
        destination = key[4]
        stats = destinations.setdefault(destination, {"counts": dict.fromkeys(STATUSES, 0), "lags": []})
        for expectation, e in zip(expectations, evidence):
            moved_on = False
            if expectation["tag"] is not None and e["success"] is not None and not e["carried"]:
                pushes = tag_pushes.get(key[:3] + (expectation["tag"],), [])
                moved_on = any(
                    digest != key[3] and expectation["pushed_at"] < at <= e["success"]
                    for at, digest in pushes
                )
            status, lag = verdict(expectation, e, window_ms, now, moved_on)
            stats["counts"][status] += 1
            if lag is not None:
                stats["lags"].append(lag)

    summary = {}
    for (account, region), stats in sorted(destinations.items()):
        lags = sorted(stats["lags"])
        entry = dict(stats["counts"], expected=sum(stats["counts"].values()))
        if lags:
            entry["latency_seconds"] = {
                "p50": nearest_rank(lags, 50) / 1000,
                "p90": nearest_rank(lags, 90) / 1000,
                "p99": nearest_rank(lags, 99) / 1000,
                "max": lags[-1] / 1000,
            }
        summary[f"{account} {region}"] = entry
    if args.format == "json":
        json.dump(
            {
                "events": counts,
                "destinations": summary,
                "unmatched_replications": unmatched,
                "unconfigured_pushes": sum(unconfigured.values()),
            },
            sys.stdout,
            indent=2,
        )
        print()
        return
    print(", ".join(f"{n} {k}" for k, n in counts.items()))
    print(f"{'DESTINATION':<28} {'EXPECTED':>9} " + " ".join(f"{s.upper():>10}" for s in STATUSES))
    for name, entry in summary.items():
        print(f"{name:<28} {entry['expected']:>9} " + " ".join(f"{entry[s]:>10}" for s in STATUSES))
    print(f"copies that match no push: {unmatched}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent check of an OTLP profiles payload (opentelemetry-proto v1.11, `v1development`).

The payload is decoded with the classes the OpenTelemetry project generates and publishes on
PyPI (`pip install opentelemetry-proto`), not with the profiler's own Rust messages, so a
wrong field number or wire type on our side shows up here.

Usage:  otlp_check.py FILE [--data]

  FILE     an `ExportProfilesServiceRequest` (the body of an OTLP/HTTP POST), or with
  --data   a `ProfilesData` (what `--format otlp` writes to a file).
  Either may be gzip-compressed; that is detected from the magic bytes.

What it checks (the MUST rules of `profiles.proto` about the shared `ProfilesDictionary`):
  * every table is present and its entry 0 is the zero value: "" for `string_table`, an empty
    message for the others (for `link_table`, all-zero trace and span ids are accepted too);
  * every index into a table is in range, wherever it appears: `Sample.stack_index`,
    `.link_index` and `.attribute_indices`; `Stack.location_indices`;
    `Location.mapping_index`, `.attribute_indices` and `Line.function_index`;
    `Mapping.filename_strindex` and `.attribute_indices`; every `Function.*_strindex`;
    `KeyValueAndUnit.key_strindex`, `.unit_strindex` and a `string_value_strindex` value;
    the profile's `sample_type`, `period_type` and `attribute_indices`;
  * every function past entry 0 has a name, a system name or a file name;
  * the attribute keys of one `attribute_indices` list (and of a resource) are unique;
  * every sample has values or timestamps, and as many of each when it has both.

What it prints (tests match these lines):
  dictionary: strings=N mappings=N locations=N functions=N stacks=N attributes=N links=N
  resource[R] {python dict of the resource attributes}
    scope='NAME' profile[P] sample_type=TYPE/UNIT samples=N period=N time=NS dur=NS
        WEIGHT root;...;leaf  ['key=value', ...]        (one line per distinct stack and
                                                         attribute set, heaviest first)
  total Sample messages: N
A frame is its function name (system name if unnamed, `?` if neither); one location with
inlined functions gives several frames; a location without lines is `MAPPING_FILE+0xADDRESS`
(`?` for an unknown file). A sample's weight is the sum of its values, or else its number of
timestamps.

Exit status: 0 when every check passes; 1 when one fails (the failures follow a line
"INVARIANT ERRORS:" on stdout); 2 when the file cannot be read or decoded, or on bad usage.
"""

import argparse
import gzip
import sys
import zlib
from collections import OrderedDict

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2

MAX_REPORTED = 100


class Problems:
    """Failed checks, in the order found, each reported once."""

    def __init__(self):
        self.seen = OrderedDict()

    def add(self, where, what):
        self.seen.setdefault(f"{where}: {what}" if where else what, None)

    def __bool__(self):
        return bool(self.seen)

    def report(self):
        print("INVARIANT ERRORS:")
        for i, line in enumerate(self.seen):
            if i == MAX_REPORTED:
                print(f"  ... and {len(self.seen) - MAX_REPORTED} more")
                break
            print(f"  {line}")


class Dictionary:
    """The shared tables of a payload: validation and lookups that never raise."""

    TABLES = ["string_table", "mapping_table", "location_table", "function_table",
              "link_table", "attribute_table", "stack_table"]

    def __init__(self, message, problems):
        self.d = message
        self.problems = problems

    def size(self, table):
        return len(getattr(self.d, table))

    def index(self, table, kind, value, where):
        """Checks one index into `table`; returns the entry, or None when out of range."""
        entries = getattr(self.d, table)
        if 0 <= value < len(entries):
            return entries[value]
        self.problems.add(where, f"{kind} index {value} out of range (table has {len(entries)})")
        return None

    def string(self, value, where):
        found = self.index("string_table", "string", value, where)
        return f"<bad string {value}>" if found is None else found

    # -- lookups for printing (already validated; fall back to a marker rather than raise)

    def text(self, value):
        table = self.d.string_table
        return table[value] if 0 <= value < len(table) else f"<bad string {value}>"

    def entry(self, table, value):
        entries = getattr(self.d, table)
        return entries[value] if 0 <= value < len(entries) else None

    # -- validation of the tables themselves

    def validate(self):
        p = self.problems
        for table in self.TABLES:
            entries = getattr(self.d, table)
            if not entries:
                p.add(table, "empty: entry 0 (the zero value) must be present")
            elif table == "string_table":
                if entries[0] != "":
                    p.add("string_table[0]", f"must be the empty string, is {entries[0]!r}")
            elif table == "link_table":
                link = entries[0]
                if any(link.trace_id) or any(link.span_id):
                    p.add("link_table[0]", "must be the zero value (all-zero ids)")
            elif entries[0].ByteSize() != 0:
                p.add(f"{table}[0]", "must be the zero value, has fields set")

        for i, m in enumerate(self.d.mapping_table):
            where = f"mapping_table[{i}]"
            self.string(m.filename_strindex, where + ".filename_strindex")
            self.attribute_list(m.attribute_indices, where)
        for i, loc in enumerate(self.d.location_table):
            where = f"location_table[{i}]"
            self.index("mapping_table", "mapping", loc.mapping_index, where + ".mapping_index")
            for j, line in enumerate(loc.lines):
                self.index("function_table", "function", line.function_index,
                           f"{where}.lines[{j}].function_index")
            self.attribute_list(loc.attribute_indices, where)
        for i, f in enumerate(self.d.function_table):
            where = f"function_table[{i}]"
            for field in ("name_strindex", "system_name_strindex", "filename_strindex"):
                self.string(getattr(f, field), f"{where}.{field}")
            if i > 0 and not (f.name_strindex or f.system_name_strindex or f.filename_strindex):
                p.add(where, "has no name, system name or file name")
        for i, stack in enumerate(self.d.stack_table):
            for j, value in enumerate(stack.location_indices):
                self.index("location_table", "location", value,
                           f"stack_table[{i}].location_indices[{j}]")
        for i, kv in enumerate(self.d.attribute_table):
            where = f"attribute_table[{i}]"
            self.string(kv.key_strindex, where + ".key_strindex")
            self.string(kv.unit_strindex, where + ".unit_strindex")
            self.any_value(kv.value, where + ".value")

    def any_value(self, value, where):
        """Checks the string references inside an AnyValue; returns it as a Python value."""
        kind = value.WhichOneof("value")
        if kind is None:
            return None
        if kind == "string_value_strindex":
            return self.string(value.string_value_strindex, where)
        if kind == "array_value":
            return [self.any_value(v, f"{where}[{i}]") for i, v in enumerate(value.array_value.values)]
        if kind == "kvlist_value":
            return {self.key_of(kv, where): self.any_value(kv.value, f"{where}.{i}")
                    for i, kv in enumerate(value.kvlist_value.values)}
        return getattr(value, kind)

    def key_of(self, kv, where):
        """The key of a common.v1 KeyValue: inline, or through the string table."""
        if kv.key:
            if kv.key_strindex:
                self.problems.add(where, "KeyValue sets both key and key_strindex")
            return kv.key
        return self.string(kv.key_strindex, where + ".key_strindex")

    def attribute_list(self, indices, where):
        """Checks an attribute_indices list; returns its attributes as 'key=value' strings."""
        out, keys = [], set()
        for j, value in enumerate(indices):
            kv = self.index("attribute_table", "attribute", value, f"{where}.attribute_indices[{j}]")
            if kv is None:
                continue
            key = self.text(kv.key_strindex)
            if key in keys:
                self.problems.add(where, f"attribute key {key!r} appears twice")
            keys.add(key)
            out.append(f"{key}={self.any_value(kv.value, where)}")
        return out

    def frames_of_location(self, value):
        """The frames of one location, innermost first (lines[0] is the innermost function)."""
        loc = self.entry("location_table", value)
        if loc is None:
            return [f"<bad location {value}>"]
        if len(loc.lines) == 0:
            mapping = self.entry("mapping_table", loc.mapping_index)
            file = self.text(mapping.filename_strindex) if mapping is not None else ""
            return [f"{file or '?'}+0x{loc.address:x}"]
        frames = []
        for line in loc.lines:
            f = self.entry("function_table", line.function_index)
            if f is None:
                frames.append(f"<bad function {line.function_index}>")
                continue
            frames.append(self.text(f.name_strindex) or self.text(f.system_name_strindex) or "?")
        return frames

    def folded_stack(self, value):
        """A stack as 'root;...;leaf' (location_indices lists the leaf first)."""
        stack = self.entry("stack_table", value)
        if stack is None:
            return f"<bad stack {value}>"
        leaf_first = [f for li in stack.location_indices for f in self.frames_of_location(li)]
        return ";".join(leaf_first[::-1])


def check_profile(dictionary, problems, profile, where):
    """Checks one profile's samples; returns {(stack, attributes): weight} in first-seen order."""
    dictionary.string(profile.sample_type.type_strindex, where + ".sample_type.type_strindex")
    dictionary.string(profile.sample_type.unit_strindex, where + ".sample_type.unit_strindex")
    dictionary.string(profile.period_type.type_strindex, where + ".period_type.type_strindex")
    dictionary.string(profile.period_type.unit_strindex, where + ".period_type.unit_strindex")
    dictionary.attribute_list(profile.attribute_indices, where)
    weights = OrderedDict()
    for i, sample in enumerate(profile.samples):
        at = f"{where}.samples[{i}]"
        dictionary.index("stack_table", "stack", sample.stack_index, at + ".stack_index")
        dictionary.index("link_table", "link", sample.link_index, at + ".link_index")
        attributes = dictionary.attribute_list(sample.attribute_indices, at)
        values, stamps = len(sample.values), len(sample.timestamps_unix_nano)
        if values == 0 and stamps == 0:
            problems.add(at, "has neither values nor timestamps")
        elif values and stamps and values != stamps:
            problems.add(at, f"has {values} values but {stamps} timestamps")
        weight = sum(sample.values) if values else stamps
        key = (dictionary.folded_stack(sample.stack_index), tuple(attributes))
        weights[key] = weights.get(key, 0) + weight
    return weights


def load(path, as_profiles_data):
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\x1f\x8b"):
        raw = gzip.decompress(raw)
    kind = profiles_pb2.ProfilesData if as_profiles_data else \
        profiles_service_pb2.ExportProfilesServiceRequest
    return kind.FromString(raw)


def main():
    parser = argparse.ArgumentParser(
        description="Decode an OTLP profiles payload with the opentelemetry-proto classes "
                    "and check its dictionary.")
    parser.add_argument("file", help="the payload (gzip-compressed or not)")
    parser.add_argument("--data", action="store_true",
                        help="FILE is a ProfilesData, not an ExportProfilesServiceRequest")
    args = parser.parse_args()
    try:
        message = load(args.file, args.data)
    except (OSError, EOFError, zlib.error, DecodeError) as e:  # BadGzipFile is an OSError
        print(f"otlp_check.py: cannot read {args.file}: {e}", file=sys.stderr)
        return 2

    problems = Problems()
    if not message.HasField("dictionary"):
        problems.add("", "the message has no dictionary")
    dictionary = Dictionary(message.dictionary, problems)
    dictionary.validate()
    counts = [(label, dictionary.size(table + "_table")) for label, table in [
        ("strings", "string"), ("mappings", "mapping"), ("locations", "location"),
        ("functions", "function"), ("stacks", "stack"), ("attributes", "attribute"),
        ("links", "link")]]
    print("dictionary: " + " ".join(f"{label}={n}" for label, n in counts))

    total = 0
    for r, rp in enumerate(message.resource_profiles):
        resource = OrderedDict()
        for i, kv in enumerate(rp.resource.attributes):
            at = f"resource[{r}].attributes[{i}]"
            key = dictionary.key_of(kv, at)
            if key in resource:
                problems.add(f"resource[{r}]", f"attribute key {key!r} appears twice")
            resource[key] = dictionary.any_value(kv.value, at)
        print(f"resource[{r}] {dict(resource)}")
        for s, sp in enumerate(rp.scope_profiles):
            for p, profile in enumerate(sp.profiles):
                where = f"resource[{r}].scope[{s}].profile[{p}]"
                weights = check_profile(dictionary, problems, profile, where)
                sample_type = (f"{dictionary.text(profile.sample_type.type_strindex)}/"
                               f"{dictionary.text(profile.sample_type.unit_strindex)}")
                print(f"  scope={sp.scope.name!r} profile[{p}] sample_type={sample_type} "
                      f"samples={len(profile.samples)} period={profile.period} "
                      f"time={profile.time_unix_nano} dur={profile.duration_nano}")
                # Heaviest first; equal weights keep their first-seen order (sorted is stable).
                for (stack, attributes), weight in sorted(weights.items(), key=lambda kv: -kv[1]):
                    print(f"    {weight:>8} {stack}  {list(attributes)}")
                total += len(profile.samples)
    print(f"total Sample messages: {total}")

    if problems:
        problems.report()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs leadstream's ClickHouse migrations, loads the sink's JSONEachRow
export and answers every analyst and dashboard query on a current ClickHouse
release (chDB: ClickHouse in-process; the tests' server is 18.16).

The sink inserts RowBinary, not JSON: the same rows in RowBinary
(`<table>.rowbinary` beside the JSON, columns in "row_binary_columns") are
loaded into a second database, and each table must hold the same rows both
ways (count and an order-independent hash of every column).

Input (argv[1], JSON): {"migrations": [{"name", "statements"}],
"export_dir", "tables", "queries": [{"label", "sql"}],
"row_binary_columns": {table: [column]}}.
Prints JSON: {"version", "loaded": {table: rows after FINAL}, "answers": {label: rows},
"row_binary_compared": [table], "errors": ["..."]}.
"""

import json
import os
import sys
import tempfile

from chdb import session


def scalar(s, sql):
    return json.loads(str(s.query(sql, "JSON")))["data"][0]["n"]


def migrate(s, spec, database, report):
    s.query(f"CREATE DATABASE {database}")
    s.query(f"USE {database}")
    for m in spec["migrations"]:
        for i, stmt in enumerate(m["statements"], 1):
            try:
                s.query(stmt)
            except Exception as e:  # noqa: BLE001 - the error text is the report
                report["errors"].append(f"{database}: migration {m['name']}, statement {i}: {e}")


def compare_row_binary(s, spec, report):
    """Loads each table's RowBinary into `leadstream_rb` and compares it with
    the JSON loaded into `leadstream`."""
    migrate(s, spec, "leadstream_rb", report)
    s.query("USE leadstream")
    for table in spec["tables"]:
        columns = spec["row_binary_columns"].get(table)
        if not columns:
            report["errors"].append(f"no RowBinary rows for {table}")
            continue
        path = os.path.join(spec["export_dir"], f"{table}.rowbinary")
        types = {
            r["name"]: r["type"]
            for r in json.loads(
                str(s.query(f"SELECT name, type FROM system.columns WHERE database = 'leadstream_rb' AND table = '{table}'", "JSON"))
            )["data"]
        }
        quoted = ", ".join(f"`{c}`" for c in columns)
        try:
            structure = ", ".join(f"`{c}` {types[c]}" for c in columns).replace("'", "\\'")
            s.query(f"INSERT INTO leadstream_rb.{table} ({quoted}) SELECT * FROM file('{path}', 'RowBinary', '{structure}')")
            digest = f"SELECT toUInt64(count()) AS n, toString(groupBitXor(cityHash64({quoted}))) AS h FROM {{db}}.{table}"
            json_side = json.loads(str(s.query(digest.format(db="leadstream"), "JSON")))["data"][0]
            binary_side = json.loads(str(s.query(digest.format(db="leadstream_rb"), "JSON")))["data"][0]
            if json_side != binary_side:
                report["errors"].append(f"{table}: JSON rows {json_side} but RowBinary rows {binary_side}")
            else:
                report["row_binary_compared"].append(table)
        except Exception as e:  # noqa: BLE001
            report["errors"].append(f"loading {path}: {e}")


def main():
    spec = json.load(open(sys.argv[1]))
    s = session.Session(tempfile.mkdtemp())
    report = {"version": None, "loaded": {}, "answers": {}, "row_binary_compared": [], "errors": []}
    migrate(s, spec, "leadstream", report)
    report["version"] = scalar(s, "SELECT version() AS n")
    for table in spec["tables"]:
        path = os.path.join(spec["export_dir"], f"{table}.jsonl")
        try:
            with open(path) as f:
                s.query(f"INSERT INTO {table} FORMAT JSONEachRow\n" + f.read())
            report["loaded"][table] = scalar(s, f"SELECT toUInt64(count()) AS n FROM {table} FINAL")
        except Exception as e:  # noqa: BLE001
            report["errors"].append(f"loading {path}: {e}")
    compare_row_binary(s, spec, report)
    for q in spec["queries"]:
        try:
            report["answers"][q["label"]] = scalar(s, f"SELECT toUInt64(count()) AS n FROM ({q['sql']})")
        except Exception as e:  # noqa: BLE001
            report["errors"].append(f"{q['label']}: {e}\n{q['sql']}")
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()

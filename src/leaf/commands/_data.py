"""``--columns``: read --data / --bench from any table with a column mapping."""

from __future__ import annotations

import argparse
from typing import Any

from leaf.data.readers import FORMATS_HELP, parse_columns, with_columns

COLUMNS_HELP = (
    "map the data's columns to leaf's fields, e.g. instruction=question,response=solution "
    "(a quoted value is a constant for every row: task='math'). The data may be "
    f"{FORMATS_HELP}; without an id column rows are numbered 1, 2, ...")


def add_columns_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--columns", default=None, metavar="FIELD=COLUMN,...", help=COLUMNS_HELP)


def data_source(path: str, args: argparse.Namespace) -> Any:
    """``path`` with the ``--columns`` mapping (a :class:`leaf.data.readers.Table`), or as
    given when there is none."""

    return with_columns(path, parse_columns(getattr(args, "columns", None)))

"""The texts a run sends: built-in sentences, or lines or a column of a file."""

from collections.abc import Sequence

from pipeserve.client.cli import args as cli_args

BUILTIN_TEXTS = (
    "I love this.",
    "Terrible service.",
    "The movie was fine, nothing special.",
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "What a wonderful surprise to find the shop still open on a Sunday evening.",
    "The battery died after two days and support never answered my emails.",
    "Not bad.",
    "The plot drags in the middle, but the last twenty minutes make up for it.",
    "She said the soup was too salty, and honestly, I have to agree with her.",
    "Absolutely brilliant performance from the whole cast.",
    "Delivery was late again.",
    "The hotel room was clean, quiet and surprisingly spacious for the price, although the "
    "breakfast left a lot to be desired and the staff seemed overwhelmed most mornings.",
    "Would not recommend.",
    "This library made our deployment twice as fast and half as painful.",
    "The instructions were confusing, the parts did not fit, and one screw was missing.",
    "A quiet, thoughtful film about growing old.",
    "Great value!",
    "After reading the first chapter I could not put the book down until three in the "
    "morning, which I regretted the next day at work but not for a second while reading.",
    "The weather is grey today.",
)


def read_texts(path: str, column: str | None = None) -> list[str]:
    """Texts from a file ('-': stdin, either UTF-8): one per line, or one tab-separated `column`
    per row.

    `column` is a header name (the first row must then be the header, and is skipped) or a
    number counting from 1, as `cut -f` (every row is data). Trailing whitespace is stripped
    (SST-2 ends its sentences with a space) and blank texts are dropped.
    """
    lines = list(cli_args.file_lines(path))
    if column is None:
        cells = lines
    else:
        rows = [line.split("\t") for line in lines]
        if column.isdigit() and int(column) >= 1:
            index = int(column) - 1
        else:
            header = [name.strip() for name in rows[0]] if rows else []
            if column not in header:
                raise cli_args.UsageError(
                    f"column {column!r} is not in the header row of {path}: {header}"
                )
            index, rows = header.index(column), rows[1:]
        if rows and not any(len(row) > index for row in rows):
            widest = max(len(row) for row in rows)
            raise cli_args.UsageError(
                f"column {column} is beyond the rows of {path}, which have at most {widest} "
                f"tab-separated column{'s' if widest != 1 else ''}"
            )
        cells = [row[index] for row in rows if len(row) > index]
    texts = [cell.rstrip() for cell in cells if cell.strip()]
    if not texts:
        raise cli_args.UsageError(f"no texts in {path}: every line is blank")
    return texts


def with_mask(texts: Sequence[str], mask_token: str) -> list[str]:
    """`texts` for fill-mask: each that holds no `mask_token` gets it in place of its last
    word."""
    return [
        text if mask_token in text else " ".join([*text.split()[:-1], mask_token]) for text in texts
    ]

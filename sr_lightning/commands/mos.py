"""`python -m sr_lightning mos prepare|score`: a blind mean-opinion-score (MOS) study.

A blind mean-opinion-score study: `prepare` writes one self-contained rating page of crops from an eval run or
from folders of method outputs; `score` turns the raters' files into each method's MOS with a 95% interval.

`prepare` takes the methods' images from one of two layouts:

* folders of images, one per method: every folder that directly holds images is a method (named after the
  folder), and images with the same file stem in sibling method folders are the same picture (e.g.
  `Set5/bicubic/baby.png`, `Set5/esrgan/baby.png`, `Set5/hr/baby.png`). Folders named
  hr/gt/ground_truth/original are the reference (a hidden anchor with ``include_hr=true``); folders named lr*
  and pictures found for fewer than two methods are ignored. The crop is the most textured ``crop`` x
  ``crop`` window of the reference, where artefacts show;
* an `eval` run directory (`results.json` + `comparisons/<set>/<image>.png`): each comparison strip
  (LR | bicubic | each model | HR, the crop where bicubic errs most) is cut back into its panels, named after
  the models listed in results.json; the LR panel is left out. Raise `comparison.images` / `comparison.size`
  of `eval` for more / larger crops.

It writes ONE self-contained HTML page (images inlined as base64, no server, no network) plus
``<page>.key.json``, the only place where the opaque crop keys are mapped to method names. Give raters the
page; keep the key file.

`score` reads the files raters downloaded from the page (JSON or CSV), un-blinds them with the key file
(``key=``, else ``*.key.json`` of the same study next to the score files or in the current folder) and
prints the MOS of each method with a 95% confidence interval (Student t, n - 1 degrees of freedom, clipped to
the 1-5 rating scale).
"""
from __future__ import annotations

import sys
from pathlib import Path

from sr_lightning.cli_args import Option, keys_help, parse_key_values
from sr_lightning.cli_help import HELP_FLAGS, asks_for_help
from sr_lightning.errors import UserError, report_user_error
from sr_lightning.mos_study import MosError, format_table, prepare, score, write_result

SUMMARY = __doc__.split("\n\n")[1]
DETAILS = __doc__.split("\n\n", 2)[2].strip()

PREPARE_OPTIONS = {
    "results": Option("", "an eval run directory (results.json + comparisons/)"),
    "images": Option("", "or a folder laid out as <method>/<image>.png (a plain folder argument: either)"),
    "output": Option("", "the page (default: <folder>/mos.html); <page>.key.json is written beside it"),
    "crop": Option(128, "crop edge in px, placed on the reference's most textured window"),
    "crops_per_image": Option(1, "crops per picture"),
    "methods": Option("", "comma list of the methods to show (default: all found)"),
    "include_hr": Option(True, "show the reference too, as a hidden anchor"),
    "zoom": Option(2, "the page enlarges crops by this factor (nearest), 1-8"),
    "max_items": Option(0, "at most this many pictures, drawn at random (0: all)"),
    "seed": Option(0, "seed of that draw and of the order without JavaScript"),
    "title": Option("Image quality study", "the page's title"),
    "overwrite": Option(False, "replace an existing page and its key file"),
}
SCORE_OPTIONS = {
    "key": Option("", "the study's <page>.key.json (default: found by study id next to the score files or here)"),
    "output": Option("", "also write the table to this .json or .csv file"),
}
USAGE = ("usage: python -m sr_lightning mos prepare results=<eval dir> | images=<folder> | <folder> [key=value ...]\n"
         "       python -m sr_lightning mos score <scores.json|scores.csv>... [key=value ...]")


def help_text(subcommand: str | None = None) -> str:
    """`mos --help`: what it does, usage, and the keys of each subcommand (or of the one asked about)."""
    sections = [SUMMARY, USAGE]
    if subcommand in (None, "prepare"):
        sections.append("mos prepare keys:\n" + keys_help(PREPARE_OPTIONS))
    if subcommand in (None, "score"):
        sections.append("mos score keys:\n" + keys_help(SCORE_OPTIONS))
    if subcommand is None:
        sections.append(DETAILS)
    return "\n\n".join(sections)


def _prepare_cli(argv: list[str]) -> int:
    opts, positional = parse_key_values(argv, PREPARE_OPTIONS)
    folders = [f for f in (opts["results"], opts["images"], *positional) if f]
    if len(folders) != 1:
        raise MosError("give exactly one folder: results=<eval run dir>, images=<folder of <method>/<image> "
                       f"files> or the folder itself (got {len(folders)}: {' '.join(folders) or 'none'})")
    root = Path(folders[0]).expanduser()
    page, key_file, summary = prepare(
        root, Path(opts["output"]) if opts["output"] else None, crop=opts["crop"],
        crops_per_image=opts["crops_per_image"],
        methods=[m.strip() for m in opts["methods"].split(",") if m.strip()] or None,
        include_hr=opts["include_hr"], zoom=opts["zoom"], max_items=opts["max_items"], seed=opts["seed"],
        title=opts["title"], overwrite=opts["overwrite"])
    for note in summary["skipped"]:
        print(f"skipped {note}", file=sys.stderr)
    print(f"MOS page {page} ({page.stat().st_size / 1e6:.2f} MB): {summary['items']} items x "
          f"{len(summary['methods'])} methods ({', '.join(summary['methods'])}) = {summary['ratings_per_rater']} "
          f"ratings per rater. Key (keep it, do not send it): {key_file}")
    return 0


def _score_cli(argv: list[str]) -> int:
    opts, files = parse_key_values(argv, SCORE_OPTIONS)
    result = score([Path(f).expanduser() for f in files], opts["key"] or None)
    print(format_table(result))
    if opts["output"]:
        write_result(result, Path(opts["output"]).expanduser())
        print(f"wrote {opts['output']}")
    return 0


HANDLERS = {"prepare": _prepare_cli, "score": _score_cli}


def run(argv: list[str]) -> int:
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        print(help_text())
        return 0
    command, rest = argv[0], argv[1:]
    if command in HANDLERS and asks_for_help(rest):
        print(help_text(command))
        return 0
    try:
        if command not in HANDLERS:
            raise MosError(f"unknown mos command '{command}'; use mos prepare ... or mos score ... (mos --help)")
        return HANDLERS[command](rest)
    except UserError as err:  # MosError, and ConfigError for an unknown key or a badly typed value
        return report_user_error(err)

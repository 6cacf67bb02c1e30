"""Download the data the evaluators need at run time, once, at install / image build time.

    python -m trainyard.evaluation.provision [--nltk-dir DIR]

Today: NLTK's ``punkt_tab`` (IFEval's sentence and word checks). Needs network; afterwards
evaluation runs offline. ``--nltk-dir`` defaults to $NLTK_DATA or NLTK's first search path;
a non-default directory must be on NLTK_DATA at run time.
"""

from __future__ import annotations

import argparse
import os
import sys

NLTK_PACKAGES = ("punkt_tab",)


def provision_nltk(download_dir: str | None = None) -> str:
    """Download the NLTK packages (a no-op when present); returns the directory used."""
    import nltk

    from trainyard.evaluation.ifeval import PUNKT_RESOURCE

    target = download_dir or os.environ.get("NLTK_DATA", "").split(os.pathsep)[0] or nltk.data.path[0]
    if target not in nltk.data.path:
        nltk.data.path.insert(0, target)
    for package in NLTK_PACKAGES:
        # nltk.download returns False (it does not raise) when the download fails
        if not nltk.download(package, download_dir=target, quiet=True, raise_on_error=False):
            raise RuntimeError(f"could not download NLTK package {package!r} into {target} (no network?)")
    nltk.data.find(PUNKT_RESOURCE)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="download evaluation data (NLTK punkt_tab) for offline use")
    parser.add_argument("--nltk-dir", help="where to put NLTK data (default: $NLTK_DATA or NLTK's first path)")
    args = parser.parse_args(argv)
    try:
        target = provision_nltk(args.nltk_dir)
    except (ImportError, RuntimeError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"NLTK data ready in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

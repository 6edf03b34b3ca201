"""Prepares TFDS datasets as bobjax reads them (ArrayRecord), bobjax's own builders included:

    python -m bobjax.data.prepare caltech_birds2011 [fgvc_aircraft ...] --data_dir=DATA_DIR

Why not ``tfds build``: tensorflow_datasets 4.9.10's ``tfds`` command does not start without apache-beam (its
convert_format module subclasses ``beam.DoFn`` on import), which bobjax does not install, and it finds
``fgvc_aircraft`` only with ``--imports=bobjax.data.aircraft``. This runs the same ``download_and_prepare`` in-process.
Manual downloads go in ``DATA_DIR/downloads/manual/`` (docs/data.md names each dataset's files).
"""

from __future__ import annotations

import argparse
import sys

from bobjax.data import sources


def prepare(name: str, data_dir: str) -> None:
    """Downloads (or reads from ``DATA_DIR/downloads/manual``) and writes dataset ``name`` in ArrayRecord format."""
    import tensorflow_datasets as tfds

    from bobjax.data import aircraft  # noqa: F401  (registers fgvc_aircraft)

    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except Exception as e:
        raise sources.DataError(f"TFDS has no dataset {name!r}: {e}") from e
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise sources.DataError(f"preparing {name!r} in {data_dir} failed ({type(e).__name__}: {e}); "
                                f"docs/data.md says which files go in {data_dir}/downloads/manual") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bobjax.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="TFDS dataset names, e.g. caltech_birds2011")
    parser.add_argument("--data_dir", required=True, help="a local folder (ArrayRecord is written locally only)")
    args = parser.parse_args(argv)
    if "://" in args.data_dir:
        parser.error(f"--data_dir={args.data_dir}: prepare into a local folder, then copy it to the bucket "
                     f"(ArrayRecord writes local files only)")
    for name in args.names:
        try:
            prepare(name, args.data_dir)
        except sources.DataError as e:
            print(f"bobjax.data.prepare: error: {e}", file=sys.stderr)
            return 1
        print(f"{name}: prepared in {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

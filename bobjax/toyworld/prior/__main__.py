"""``python -m bobjax.toyworld.prior --config=configs/toyworld_prior.py --workdir=DIR [--export=PATH]``."""

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "configs/toyworld_prior.py (or another prior config).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, caches, TensorBoard logs and the sample grid.")
flags.DEFINE_string("export", None, "Where the diffusers folder goes (default WORKDIR/toyworld_prior).")
flags.mark_flags_as_required(["config", "workdir"])


def _local(name: str) -> str | None:
    """Flag ``name`` as a local path: the export is a diffusers folder, which load_stable_diffusion reads from local
    disk (or the hub) only."""
    from bobjax import artifacts

    value = getattr(flags.FLAGS, name)
    if value is None:
        return None
    try:
        path = artifacts.storage_path(value, f"--{name}")
    except artifacts.StorageError as e:
        raise app.UsageError(str(e)) from e
    if artifacts.on_object_store(path):
        raise app.UsageError(f"--{name}={value!r}: the prior trainer writes local folders only")
    return str(path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bobjax.toyworld.prior import pretrain

    print(pretrain.run(flags.FLAGS.config, _local("workdir"), _local("export")))


if __name__ == "__main__":
    app.run(main)

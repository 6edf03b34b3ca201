"""The `finetune` stage (placeholder until its issue lands)."""

from bobjax.errors import StageNotBuiltError


def run(config, workdir: str) -> None:
    del config, workdir
    raise StageNotBuiltError("stage 'finetune' is not built yet; run the stages before it with --config.stages=...")

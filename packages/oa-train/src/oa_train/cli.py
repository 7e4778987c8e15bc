"""`oa train CONFIG`: dispatch on the config's ``method:``; one process, or N through accelerate."""

from __future__ import annotations

import click

from oa_cli.options import set_option
from oa_core.errors import OAError


def add_commands(cli: click.Group) -> None:
    cli.add_command(train)


@click.command("train")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@click.option("--resume", metavar="PATH|auto", help="Resume from a checkpoint folder, or the latest one (auto).")
@click.option("--num-processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (GPUs) to train on, started with accelerate launch.")
@click.option("--accelerate-config", type=click.Path(exists=True, dir_okay=False),
              help="accelerate config file: DDP, DeepSpeed ZeRO-2/3 or FSDP preset (examples/configs/accelerate).")
def train(config_file: str, overrides: tuple[str, ...], resume: str | None, num_processes: int,
          accelerate_config: str | None) -> None:
    """Train as CONFIG says (method: sft, pretrain, ...); writes into its output_dir."""
    from oa_core.config import load_config
    from oa_train.launch import check_gpus, in_worker, launch, launch_env
    from oa_train.training.loop import train as train_loop
    from oa_train.training.output_dir import RunLock, check_output_dir

    overrides = [*overrides, *([f"train.resume_from={resume}"] if resume else [])]
    loaded = load_config(config_file, overrides)  # validate before starting any worker
    if (num_processes > 1 or accelerate_config) and not in_worker():
        check_gpus(num_processes)
        check_output_dir(loaded.config)
        env = launch_env(accelerate_config)  # refuses a preset this machine cannot run, before anything is created
        target = ["-m", "oa_cli.main", "train", config_file, *(a for o in overrides for a in ("--set", o))]
        with RunLock(loaded.config.output_dir):  # held for the workers (they see OA_RUN_LOCKED=1)
            rc = launch(target, num_processes=num_processes, accelerate_config=accelerate_config, env=env)
        if rc:
            raise OAError(f"training failed in a worker process (exit code {rc})", hint="see the worker output above")
        return
    train_loop(loaded)

"""The scale-out recipes in deploy/: the Kubernetes Indexed Job, the Slurm array script and the
torchrun multi-node launcher, checked as far as a machine without a cluster allows: the manifest
parses and passes only options the live `seco predict` accepts, the scripts pass `bash -n` and
shellcheck, and their dry-run commands parse against `seco` and torchrun's own parsers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from _deploy_helpers import DEPLOY, check_args, dry_run, dry_run_argv, read_dockerfile, seco_command

K8S_JOB = DEPLOY / "k8s" / "predict-indexed-job.yaml"
SLURM_PREDICT = DEPLOY / "slurm" / "predict-array.sbatch"
SLURM_TRAIN = DEPLOY / "slurm" / "train-multinode.sbatch"
TORCHRUN_TRAIN = DEPLOY / "torchrun" / "train-multinode.sh"
SCRIPTS = [SLURM_PREDICT, SLURM_TRAIN, TORCHRUN_TRAIN]
INDEX_VAR = "$(JOB_COMPLETION_INDEX)"


# ----------------------------------------------------------------------------------------------
# Kubernetes Indexed Job
# ----------------------------------------------------------------------------------------------
def _load(path: Path) -> list[dict]:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert documents, f"{path} holds no YAML document"
    for document in documents:
        assert isinstance(document, dict) and {"apiVersion", "kind", "metadata"} <= set(document), path
    return documents


@pytest.fixture(scope="module")
def k8s_documents() -> list[dict]:
    """Every document of every manifest in deploy/k8s."""
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert K8S_JOB in files
    return [d for f in files for d in _load(f)]


@pytest.fixture(scope="module")
def job() -> dict:
    (found,) = [d for d in _load(K8S_JOB) if d["kind"] == "Job"]
    assert found["apiVersion"] == "batch/v1"
    return found


def _claims(k8s_documents: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_documents if d["kind"] == "PersistentVolumeClaim"}


def _image_user(image: str) -> int:
    """The numeric USER of the Dockerfile target that `image`'s tag names."""
    repository, _, tag = image.rpartition(":")
    assert repository.rsplit("/", 1)[-1] == "seco-deploy", image
    stages = read_dockerfile().stages
    assert tag in stages, f"tag `{tag}` is not a Dockerfile target"
    return int(stages[tag].all("USER")[-1].args.split(":")[0])


def _container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_job_is_indexed_with_one_pod_per_shard(job: dict) -> None:
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["completions"], int) and spec["completions"] >= 1
    assert 1 <= spec.get("parallelism", 1) <= spec["completions"]
    assert spec["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def test_job_runs_the_image_built_by_the_dockerfile(job: dict) -> None:
    container = _container(job)
    uid = _image_user(container["image"])
    # The image's ENTRYPOINT is `seco`: either no command, or `seco` itself.
    assert container.get("command") in (None, ["seco"])
    security = job["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == uid


def test_job_arguments_are_options_seco_predict_accepts(job: dict) -> None:
    args = [str(a) for a in _container(job)["args"]]
    assert args[0] == "predict"
    completions = job["spec"]["completions"]
    shard_flags = [i for i, a in enumerate(args) if a == "--shard" or a.startswith("--shard=")]
    assert len(shard_flags) == 1, "exactly one --shard"
    command = seco_command("predict")
    for index in sorted({0, completions - 1}):
        concrete = [a.replace(INDEX_VAR, str(index)) for a in args[1:]]
        parsed = check_args(command, concrete)
        assert parsed["shard"] == [f"{index}/{completions}"], (
            f"--shard must be {INDEX_VAR}/{completions} (the Job's completions), got {parsed['shard']}"
        )


def test_job_completion_index_reaches_the_arguments(job: dict) -> None:
    container = _container(job)
    assert any(INDEX_VAR in str(a) for a in container["args"])
    (index_env,) = [e for e in container["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
    path = index_env["valueFrom"]["fieldRef"]["fieldPath"]
    assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_job_paths_lie_on_the_shared_volume(job: dict, k8s_documents: list[dict]) -> None:
    container = _container(job)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/data", "/models", "/out"}
    assert mounts["/data"].get("readOnly") and mounts["/models"].get("readOnly")
    assert not mounts["/out"].get("readOnly"), "/out must be writable"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert {m["name"] for m in mounts.values()} <= set(volumes)
    claims = _claims(k8s_documents)
    for volume in volumes.values():
        claim = claims[volume["persistentVolumeClaim"]["claimName"]]
        assert "ReadWriteMany" in claim["spec"]["accessModes"], "every pod mounts the same volume"
    parsed = check_args(seco_command("predict"), [str(a).replace(INDEX_VAR, "0") for a in container["args"][1:]])
    for name, root in (("source", "/data"), ("model", "/models"), ("out", "/out")):
        (value,) = parsed[name]
        assert value is not None and value.startswith(root + "/"), f"{name}={value} is not under {root}"


def test_stage_pod_mounts_the_same_volume_as_the_job(job: dict, k8s_documents: list[dict]) -> None:
    (pod,) = [d for d in k8s_documents if d["kind"] == "Pod"]
    (container,) = pod["spec"]["containers"]
    uid = _image_user(container["image"])
    assert (
        pod["spec"]["securityContext"]["runAsUser"]
        == uid
        == job["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    ), "the stage pod must create data/, models/ and out/ as the user the Job runs as"
    assert container["command"][0] == "sleep"
    claim_of = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    job_claims = {v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert {claim_of[m["name"]] for m in container["volumeMounts"]} == job_claims
    assert job_claims <= set(_claims(k8s_documents))


def test_predict_help_lists_the_options_the_recipes_use(job: dict) -> None:
    from _cli import invoke

    result = invoke(["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    used = {str(a).split("=")[0] for a in _container(job)["args"] if str(a).startswith("--")}
    slurm = dry_run_argv(SLURM_PREDICT, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
    used |= {a.split("=")[0] for a in slurm if a.startswith("--")}
    assert {"--model", "--out", "--shard"} <= used
    missing = sorted(o for o in used if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", result.output))
    assert not missing, f"`seco predict --help` does not list {missing}"


# ----------------------------------------------------------------------------------------------
# Shell scripts: syntax and lint
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_bash_n(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    done = subprocess.run([binary, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------------------------
# Slurm array: seco predict --shard i/n
# ----------------------------------------------------------------------------------------------
def _array_env(task: int, first: int, last: int) -> dict[str, str]:
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_COUNT": str(last - first + 1),
    }


@pytest.mark.parametrize(("task", "first", "last", "shard"), [(0, 0, 7, "0/8"), (7, 0, 7, "7/8"), (3, 1, 4, "2/4")])
def test_slurm_array_task_runs_its_shard(task: int, first: int, last: int, shard: str) -> None:
    argv = dry_run_argv(SLURM_PREDICT, _array_env(task, first, last), ("--tags", "/data/tags list.csv", "--crf"))
    assert argv[:2] == ["seco", "predict"]
    parsed = check_args(seco_command("predict"), argv[2:])
    assert parsed["shard"] == [shard]
    assert parsed["tags"] == ["/data/tags list.csv"] and parsed["crf"] == [None]


def test_slurm_array_settings_and_container_prefix() -> None:
    env = {
        **_array_env(2, 0, 3),
        "SOURCE": "/scratch/imgs",
        "MODEL": "/scratch/m.engine",
        "OUT": "/scratch/out",
        "MODE": "pseudo",
        "BATCH": "16",
        "SECO": "apptainer run --nv seco-deploy-gpu.sif",
    }
    argv = dry_run_argv(SLURM_PREDICT, env)
    assert argv[:5] == ["apptainer", "run", "--nv", "seco-deploy-gpu.sif", "predict"]
    parsed = check_args(seco_command("predict"), argv[5:])
    assert parsed["source"] == ["/scratch/imgs"] and parsed["model"] == ["/scratch/m.engine"]
    assert parsed["out"] == ["/scratch/out"] and parsed["mode"] == ["pseudo"] and parsed["batch"] == ["16"]
    assert parsed["shard"] == ["2/4"]


def test_slurm_array_refuses_gaps_and_missing_array() -> None:
    stepped = {
        "SLURM_ARRAY_TASK_ID": "4",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "6",
        "SLURM_ARRAY_TASK_COUNT": "4",
    }  # --array=0-6:2
    done = dry_run(SLURM_PREDICT, stepped)
    assert done.returncode == 2 and "not contiguous" in done.stderr
    done = dry_run(SLURM_PREDICT, {})
    assert done.returncode != 0 and "SLURM_ARRAY_TASK_ID" in done.stderr
    done = dry_run(SLURM_PREDICT, {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8"})
    assert done.returncode == 2 and "outside" in done.stderr


def test_slurm_array_needs_only_the_task_id_and_count() -> None:
    """What the docs' dry-run example sets; Slurm itself also sets MIN and MAX."""
    argv = dry_run_argv(SLURM_PREDICT, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8"})
    assert check_args(seco_command("predict"), argv[2:])["shard"] == ["3/8"]


# ----------------------------------------------------------------------------------------------
# torchrun multi-node training
# ----------------------------------------------------------------------------------------------
def _parse_torchrun(argv: list[str]):  # noqa: ANN202 - argparse.Namespace
    from torch.distributed.run import parse_args

    assert argv[0] == "torchrun"
    args = parse_args(argv[1:])
    assert args.module and args.training_script == "seco_deploy.cli", "torchrun must run `-m seco_deploy.cli`"
    assert args.training_script_args[0] == "train"
    return args, check_args(seco_command("train"), args.training_script_args[1:])


def test_torchrun_launch_parses_for_torchrun_and_seco_train() -> None:
    env = {
        "DATA": "/shared/VOC2012",
        "OUT": "/shared/runs/voc",
        "NNODES": "2",
        "NPROC_PER_NODE": "8",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29400",
        "RUN_ID": "voc-1",
    }
    argv = dry_run_argv(TORCHRUN_TRAIN, env, ("--preset", "voc", "--set", "train.iters=100", "--resume"))
    args, train = _parse_torchrun(argv)
    assert (args.nnodes, args.nproc_per_node) == ("2", "8")
    assert (args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == ("c10d", "node0:29400", "voc-1")
    assert train["data"] == ["/shared/VOC2012"] and train["out"] == ["/shared/runs/voc"]
    assert train["preset"] == ["voc"] and train["set_"] == ["train.iters=100"] and train["resume"] == [None]


def test_torchrun_launch_takes_nodes_and_master_from_slurm(tmp_path: Path) -> None:
    scontrol = tmp_path / "scontrol"  # stands in for Slurm's: `scontrol show hostnames LIST`
    script = '#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] && printf "gpu07\\ngpu08\\n"\n'
    scontrol.write_text(script, encoding="utf-8")
    scontrol.chmod(0o755)
    env = {
        "DATA": "/d",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_GPUS_ON_NODE": "4",
        "PATH": f"{tmp_path}:/usr/bin:/bin",
    }
    args, train = _parse_torchrun(dry_run_argv(TORCHRUN_TRAIN, env))
    assert (args.nnodes, args.nproc_per_node) == ("2", "4")
    assert (args.rdzv_endpoint, args.rdzv_id) == ("gpu07:29500", "4242")
    assert train["out"] == ["runs/4242"]


def test_torchrun_launch_needs_a_master_for_several_nodes() -> None:
    done = dry_run(TORCHRUN_TRAIN, {"DATA": "/d", "NNODES": "2"})
    assert done.returncode == 2 and "MASTER_ADDR" in done.stderr
    done = dry_run(TORCHRUN_TRAIN, {"NNODES": "1"})
    assert done.returncode != 0 and "DATA" in done.stderr
    args, _ = _parse_torchrun(dry_run_argv(TORCHRUN_TRAIN, {"DATA": "/d"}))
    assert args.nnodes == "1" and args.rdzv_endpoint == "localhost:29500"


def test_slurm_training_job_runs_the_launcher_once_per_node(tmp_path: Path) -> None:
    argv = dry_run_argv(SLURM_TRAIN, {"SLURM_SUBMIT_DIR": str(tmp_path)}, ("--preset", "coco"))
    assert argv[0] == "srun" and "--ntasks-per-node=1" in argv
    launcher = argv.index(str(tmp_path / "deploy" / "torchrun" / "train-multinode.sh"))
    assert argv[launcher + 1 :] == ["--preset", "coco"]
    assert TORCHRUN_TRAIN.relative_to(DEPLOY.parent).as_posix() == "deploy/torchrun/train-multinode.sh"

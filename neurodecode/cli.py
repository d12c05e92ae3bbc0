"""The ``neurodecode`` command line: a thin layer over the Python API.

Subcommands
-----------
fit       fit decoders and write a run folder (config, weights, metrics.json, report.html)
evaluate  score a published checkpoint (--published FAMILY:PATH) on your data, with fit's run folder
simulate  write a simulated dataset in a real dataset's on-disk layout
adapt     adapt a fitted run's decoder to a new subject from few trials
reconstruct  reconstruct a fitted run's test images with a diffusion backend (gallery + metrics)
ablate    ablate atlas regions of a fitted run's decoder (effects, CIs, permutation p-values, FDR, maps)
config    print the resolved config of a recipe, or every key with its default
recipes   list the recipes shipped with neurodecode
export    write a fitted run's decoder as a Hugging Face Hub model folder (optionally push it)
summarize tabulate run / sweep folders: mean, SD and 95% t-interval over seeds (summary.md, .csv, .html)
download  download NSD, THINGS-EEG2, THINGS-MEG or MEG-MASC (a selection) into its real layout, verified
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

FIT_EPILOG = """\
examples:
  neurodecode fit
      the embedded demo: simulates NSD in the real on-disk layout (cached), loads it with
      load_nsd, fits a ridge baseline and a contrastive MLP, writes runs/demo/report.html
  neurodecode fit nsd_ridge --root /data/natural-scenes-dataset
      a recipe shipped with neurodecode (`neurodecode recipes` lists them) on real NSD (the bucket root holding nsddata/, nsddata_betas/, nsddata_stimuli/)
  neurodecode fit demo --set models.mlp.max_epochs=5 --set data.subjects=[1]
      any recipe with overrides; values are read as YAML (numbers, lists, null)
  neurodecode fit --help-config
      every config key with its default and meaning
  neurodecode fit --resume runs/demo
      continue an interrupted run from its last checkpoint (same result as an uninterrupted run)
  neurodecode fit demo --sweep models.mlp.lr=1e-3,3e-4 --sweep data.subjects=[1],[1,2] --seeds 0,1,2
      a sweep: one run folder per value combination x seed under runs/demo-sweep/ (values split at the
      commas outside brackets), run as local subprocesses (--max-parallel N); rerun to finish it
  neurodecode fit things_meg --seeds 0,1 --set evaluation.scheme=loso --launcher slurm --slurm-gpus 1
      one SLURM job array, one job per seed x held-out subject; requeued on preemption (exact resume);
      then `neurodecode summarize runs/things_meg-sweep` (mean and 95% CI over seeds); docs/cluster.md

the run folder holds:
  config.yaml        the resolved config (rerun with: neurodecode fit RUN/config.yaml)
  models/            weights as safetensors + JSON config (mlp/, ridge/ with one model per subject)
  checkpoints/       the MLP's training checkpoints (for --resume)
  metrics.json       every retrieval metric with its bootstrap confidence interval
  report.html        self-contained report: table with CIs, per-subject bars, top-k curve, examples
  predictions_*.npz  decoded test embeddings
"""


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: the cores this process may use — OMP_NUM_THREADS, "
                        "else the CPU affinity and cgroup quota — never more)")


def _set_threads(args: argparse.Namespace) -> None:
    from .utils import logger, set_torch_threads

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    n = set_torch_threads(args.threads)
    logger.info("Using %d CPU thread%s", n, "" if n == 1 else "s")


def _level(args: argparse.Namespace) -> str:
    return "debug" if args.verbose else "warning" if args.quiet else "info"


def _add_fit_command(sub: Any) -> None:
    """The ``fit`` command."""
    fit = sub.add_parser(
        "fit", help="fit decoders on a dataset and write a run folder with a report",
        description="Fit a ridge baseline and a multi-subject contrastive decoder, evaluate retrieval "
                    "(MindEye2 protocol, bootstrap CIs) and write config, weights, metrics.json and "
                    "report.html. With no recipe, runs the embedded demo on simulated NSD.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FIT_EPILOG)
    fit.add_argument("recipe", nargs="?", help="a shipped recipe's name (`neurodecode recipes`) or a path to "
                     "a YAML recipe; default: the embedded demo")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set models.mlp.lr=1e-3 (repeatable)")
    fit.add_argument("--root", help="dataset root on disk (same as --set data.root=PATH)")
    fit.add_argument("--output", "-o", help="run folder (default: <output_dir>/<name>, never overwritten)")
    fit.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run folder from its last training checkpoint "
                          "(uses RUN_DIR/config.yaml)")
    fit.add_argument("--help-config", action="store_true", help="list every config key with its default and exit")
    sw = fit.add_argument_group(
        "sweeps and clusters", "one job per value combination x seed (x held-out subject with evaluation.scheme="
        "loso) through submitit, each in its own run folder under <output_dir>/<name>-sweep/ (or --output); "
        "rerunning the command skips finished jobs and resumes started ones (docs/cluster.md)")
    sw.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                    help="values of a config key, split at the commas outside brackets and read as YAML: "
                         "--sweep models.mlp.lr=1e-3,3e-4 --sweep data.subjects=[1,2],[1,3] (repeatable: "
                         "the grid is the product)")
    sw.add_argument("--seeds", metavar="S1,S2", help="one job per seed, e.g. --seeds 0,1,2")
    sw.add_argument("--launcher", choices=("local", "slurm"),
                    help="local subprocesses (default) or one SLURM job array (needs submitit: "
                         "pip install 'neurodecode[cluster]')")
    sw.add_argument("--max-parallel", type=int, default=1, metavar="N", help="local: jobs at once (default 1)")
    sw.add_argument("--dry-run", action="store_true", help="list the jobs, their folders and states; run nothing")
    sw.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition")
    sw.add_argument("--slurm-time", metavar="MIN|H:MM:SS",
                    help="wall time per job (default 60 minutes; preempted or timed-out jobs are requeued)")
    sw.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job")
    sw.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job")
    sw.add_argument("--slurm-mem", metavar="SIZE", help="memory per job, e.g. 32G")
    sw.add_argument("--slurm-array-parallelism", type=int, metavar="N", help="array jobs running at once")
    sw.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                    help="a shell line run before each job, e.g. 'module load cuda' (repeatable)")
    _add_threads(fit)
    _add_verbosity(fit)


def _add_adapt_command(sub: Any) -> None:
    """The ``adapt`` command."""
    ad = sub.add_parser(
        "adapt", help="adapt a fitted run's decoder to a new subject from few trials",
        description="MindBridge-style reset-tuning: add a fresh adapter for SUBJECT to the run's shared "
                    "decoder, train it with the shared encoder frozen, then unfreeze the shared encoder at a "
                    "reduced learning rate. Uses a fraction of the subject's training images (all their "
                    "repetitions), evaluates on the subject's test images and writes "
                    "RUN/adapted/subjNN/ (model/, metrics.json, report.html).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  neurodecode simulate nsd sim3 --n-subjects 3\n"
               "  neurodecode simulate things_eeg2 eeg_sim --param variant=atm --param n_train_concepts=50\n"
               "  neurodecode fit --root sim3 --set data.subjects=[1,2]\n"
               "  neurodecode adapt runs/demo --subject 3 --data sim3 --fraction 0.1")
    ad.add_argument("run", help="a run folder written by `neurodecode fit`")
    ad.add_argument("--subject", type=int, required=True, help="the new subject's number")
    ad.add_argument("--data", help="dataset root holding the subject (default: the run's data root)")
    ad.add_argument("--fraction", type=float, default=0.1,
                    help="fraction of the subject's training images used (default 0.1)")
    ad.add_argument("--epochs", type=int, default=20, help="adaptation epochs in total (default 20)")
    ad.add_argument("--freeze-epochs", type=int, default=5,
                    help="first epochs that train only the new adapter (default 5)")
    ad.add_argument("--output", "-o", help="output folder (default RUN/adapted/subjNN, never overwritten)")
    _add_threads(ad)
    _add_verbosity(ad)


def _add_reconstruct_command(sub: Any) -> None:
    """The ``reconstruct`` command."""
    rc = sub.add_parser(
        "reconstruct", help="reconstruct a fitted run's test images with a diffusion backend",
        description="Decode the run's test trials with its deep decoder, condition a diffusers backend on the "
                    "decoded embeddings (img2img from the low-level head when the model has one), and write "
                    "RUN/reconstructions-BACKEND/ (PNGs + manifest.json, metrics.json, gallery.html).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  neurodecode reconstruct runs/nsd_mindeye --generator ~/models/sd21-unclip "
               "--backend unclip --limit 32 --n-samples 4")
    rc.add_argument("run", help="a run folder written by `neurodecode fit`")
    rc.add_argument("--generator", help="the backend's diffusers folder (or a cached repo id); not needed with "
                                        "--stage lowlevel")
    rc.add_argument("--backend", default="unclip", choices=("unclip", "kandinsky", "ip_adapter", "versatile"))
    rc.add_argument("--stage", default="full", choices=("full", "lowlevel"),
                    help="full: two-stage reconstruction (default); lowlevel: the low-level head's images alone "
                         "(e.g. MindEye2's blurry reconstructions), no generator")
    rc.add_argument("--no-prior", action="store_true",
                    help="a decoder with a diffusion prior (published MindEye1 / MindEye2): condition on the "
                         "decoded embedding, not on the prior's sampled image tokens")
    rc.add_argument("--prior-steps", type=int, default=20, help="DDIM steps of the diffusion prior (default 20)")
    rc.add_argument("--lowlevel-vae", metavar="DIR",
                    help="the autoencoder whose latents the low-level head predicts (a published MindEye2 run: "
                         "Stable Diffusion's VAE); default the run's models.mlp.lowlevel_vae, else the generator's")
    rc.add_argument("--limit", type=int, default=16, help="first N test items (default 16; 0 = all)")
    rc.add_argument("--n-samples", type=int, default=1, help="samples per item, best-of-N by CLIP (default 1)")
    rc.add_argument("--steps", type=int, default=None, help="inference steps (default: the backend's)")
    rc.add_argument("--strength", type=float, default=0.75, help="img2img strength from the low-level image")
    rc.add_argument("--seed", type=int, default=0, help="base seed (item i uses seed + i)")
    rc.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default 4)")
    rc.add_argument("--device", default="auto", help="torch device (default auto)")
    rc.add_argument("--size", type=int, default=None, help="output side in pixels (default: the backend's)")
    rc.add_argument("--output", "-o", help="output folder (default RUN/reconstructions-BACKEND, never overwritten)")
    rc.add_argument("--captions", action="store_true",
                    help="also decode captions by caption-bank retrieval (training captions in the run's CLIP "
                         "space) and score them (BLEU, METEOR, ROUGE-L, CIDEr, SPICE, CLIP-S, RefCLIP-S)")
    rc.add_argument("--metric-weights", action="append", default=[], metavar="NET=PATH",
                    help="local weights of a feature network for MindEye2's metrics (alexnet, inception, clip, "
                         "effnet, swav); repeatable")
    _add_verbosity(rc)


def _add_ablate_command(sub: Any) -> None:
    """The ``ablate`` command."""
    ab = sub.add_parser(
        "ablate", help="ablate atlas regions of a fitted run's decoder",
        description="Lesion (zero / mean / permute) each atlas region in the run's test trials, or refit the "
                    "ridge decoder without it / on it alone; score retrieval with bootstrap CIs and a "
                    "permutation p-value against random regions of the same size, FDR across regions. Writes "
                    "RUN/ablation-ATLAS/ (ablation.csv, ablation.json, report.html, metrics.json).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="atlases: nsd:ROI[:hemi]  yeo7:DIR  yeo17:DIR  schaefer400-7:DIR  seitzman  dosenbach  sensors[:hemi]"
               "  times:WIDTH[,STEP][,growing]  path/to/labels.nii.gz (subj{subject:02d} for one per subject;"
               " {root} = the data root)\n"
               "examples:\n  neurodecode ablate runs/nsd_wholebrain --atlas yeo7:~/nilearn_data --strategy zero "
               "--strategy alone\n  neurodecode ablate runs/things_eeg --atlas sensors:hemi --strategy permute")
    ab.add_argument("run", help="a run folder written by `neurodecode fit`")
    ab.add_argument("--atlas", help="the atlas (default: the run config's ablation.atlas)")
    ab.add_argument("--strategy", action="append", dest="strategies",
                    choices=("zero", "mean", "permute", "without", "alone"),
                    help="repeatable (default: the config's, zero)")
    ab.add_argument("--metric", action="append", dest="metrics", choices=("top1", "2way"),
                    help="repeatable (default: top1 and 2way)")
    ab.add_argument("--model", choices=("ridge", "mlp"), help="which fitted decoder (default ridge)")
    ab.add_argument("--n-null", type=int, help="random same-size regions per region (default 200)")
    ab.add_argument("--n-null-retrain", type=int, help="random regions per region for refits (default 20)")
    ab.add_argument("--transforms", help="MNI → data transform per subject ({subject:02d}, {root} filled)")
    ab.add_argument("--output", "-o", help="output folder (default RUN/ablation-ATLAS, never overwritten)")
    _add_threads(ab)
    _add_verbosity(ab)


def _add_evaluate_command(sub: Any) -> None:
    """The ``evaluate`` command."""
    ev = sub.add_parser(
        "evaluate", help="score a published checkpoint on your data, with the run folder of `fit`",
        description="Load and preprocess the data as `neurodecode fit` does (the recipe's data, targets and "
                    "protocol; default: the family's recipe), read the original checkpoint weights-only with "
                    "neurodecode.models.from_published, check its subjects, input sizes and output width "
                    "against the data and targets, decode the test trials and score retrieval (same N-way "
                    "draw, bootstrap CIs and leakage guard as fit). Nothing is trained. Writes a run folder "
                    "(config.yaml, models/mlp/ with published.json, metrics.json, report.html, "
                    "predictions_mlp.npz) that `neurodecode ablate RUN --model mlp` and `neurodecode "
                    "reconstruct RUN` take.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  neurodecode evaluate things_eeg_atm --published atm:ATMS/sub-08/40.pth "
               "--root ~/data/things-eeg2 --subject 8\n"
               "  neurodecode evaluate nsd_mindeye --published mindeye2:final_subj01_pretrained_40sess_24bs/"
               "last.pth --root ~/data/nsd --subject 1\n"
               "families and their options: docs/published.md")
    ev.add_argument("recipe", nargs="?", help="a shipped recipe's name or a YAML recipe giving the data, "
                    "targets and protocol (default: the family's recipe, e.g. things_eeg_atm for atm)")
    ev.add_argument("--published", required=True, metavar="FAMILY:PATH",
                    help="the original checkpoint file and its family (neurodecode.models.list_published())")
    ev.add_argument("--root", help="dataset root on disk (same as --set data.root=PATH)")
    ev.add_argument("--subject", type=int, nargs="+", metavar="N",
                    help="the subjects to score (same as --set data.subjects=[N,...])")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set evaluation.n_boot=200 (repeatable)")
    ev.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the family's loader, value read as YAML, e.g. --option n_heads=4 "
                         "(repeatable; docs/published.md)")
    ev.add_argument("--output", "-o", help="run folder (default: <output_dir>/<name>-published-FAMILY, never "
                                           "overwritten)")
    _add_threads(ev)
    _add_verbosity(ev)


def _add_simulate_command(sub: Any) -> None:
    """The ``simulate`` command."""
    sim = sub.add_parser("simulate", help="write a simulated dataset in a real on-disk layout",
                         description="Write a simulated dataset in the real layout of NAME, with brain "
                                     "responses generated from procedural stimuli (see docs/simulator.md).")
    sim.add_argument("name", help="dataset layout to simulate: nsd, things_eeg2, things_meg, masc")
    sim.add_argument("out_dir", help="folder to write")
    sim.add_argument("--n-subjects", type=int, default=2, help="number of subjects (default 2)")
    sim.add_argument("--n-sessions", type=int, default=None, help="NSD: sessions per subject (default 6)")
    sim.add_argument("--shared-fraction", type=float, default=None,
                     help="NSD: fraction of images in the shared test pool (default 0.2; NSD: 0.1)")
    sim.add_argument("--trials-per-session", type=int, default=None,
                     help="NSD: trials per session (default 750)")
    sim.add_argument("--image-size", type=int, default=None, help="image side in pixels (default 64)")
    sim.add_argument("--response", choices=("nonlinear", "linear"), default=None,
                     help="generative model of the responses: nonlinear (default; where a deep decoder "
                          "can beat ridge) or linear (ridge is near-optimal); see docs/simulator.md")
    sim.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                     help="any other parameter of the simulator (value read as YAML), e.g. "
                          "--param signal_window=[0.1,0.2] --param variant=atm (see docs/simulator.md)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing different simulation")
    _add_verbosity(sim)


def _add_config_command(sub: Any) -> None:
    """The ``config`` command."""
    cfg = sub.add_parser("config", help="print the resolved config of a recipe as YAML",
                         description="Print the resolved config (recipe + --set overrides) as YAML.")
    cfg.add_argument("recipe", nargs="?", help="a shipped recipe's name or a YAML file; default: the embedded demo")
    cfg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _add_recipes_command(sub: Any) -> None:
    """The ``recipes`` command."""
    rec = sub.add_parser("recipes", help="list the recipes shipped with neurodecode, one line each",
                         description="List the recipes shipped with neurodecode. Run one with "
                                     "`neurodecode fit NAME`; print it with `neurodecode config NAME`.")
    rec.add_argument("--path", action="store_true", help="also print where each recipe file is")


def _add_summarize_command(sub: Any) -> None:
    """The ``summarize`` command."""
    sm = sub.add_parser(
        "summarize", help="tabulate run or sweep folders: mean and 95%% CI over seeds",
        description="Collect the finished `neurodecode fit` runs under RUN... (run folders, sweep folders, or "
                    "folders holding them), group the runs that differ only by seed (and leave-one-subject-out "
                    "fold), and write summary.md, summary.csv and summary.html: per setting, model and metric "
                    "the number of seeds, mean, SD, a Student-t interval over seeds (none with one seed) and "
                    "the chance level. A seed counts once: its value is the run's mean over test subjects.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  neurodecode summarize runs/demo-sweep\n"
               "  neurodecode summarize runs/demo runs/demo-1 -o results --metric nway_top1_forward")
    sm.add_argument("runs", nargs="+", metavar="RUN", help="run folders or sweep folders")
    sm.add_argument("--output", "-o", help="folder for the summary files (default: the one RUN given)")
    sm.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                    help="keep this metric, e.g. nway_top1_forward or 2way_forward (repeatable; default all)")
    sm.add_argument("--model", action="append", dest="models", metavar="NAME",
                    help="keep this model: ridge or mlp (repeatable; default all)")
    sm.add_argument("--ci", type=float, default=0.95, help="confidence level of the interval (default 0.95)")
    _add_verbosity(sm)


def _add_download_command(sub: Any) -> None:
    """The ``download`` command."""
    dl = sub.add_parser(
        "download", help="download a dataset (or a selection of it) into its real on-disk layout",
        description="Download NSD, THINGS-EEG2, THINGS-MEG or MEG-MASC from their public hosts into the layout "
                    "their loaders read (docs/download.md lists the hosts). Every file is verified (checksum, "
                    "else size) before it is renamed into place; an interrupted download resumes when the same "
                    "command is run again; files already present and verified are skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  neurodecode download nsd --root ~/data/nsd --subjects 1 --sessions 1-3 --rois nsdgeneral "
               "--dry-run\n"
               "  neurodecode download nsd --root ~/data/nsd --subjects 1,2,5,7 --accept-nsd-terms\n"
               "  neurodecode download things_eeg2 --root ~/data/things-eeg2 --variant atm --subjects 1-3\n"
               "  neurodecode download things_meg --root ~/data/ds004212 --subjects 1\n"
               "  neurodecode download masc --root ~/data/masc --subjects 1-5 --sessions 0\n"
               "then: neurodecode fit nsd_ridge --root ~/data/nsd")
    dl.add_argument("dataset", help="nsd, things_eeg2, things_meg or masc")
    dl.add_argument("--root", help="folder to download into (default: the dataset's root setting, e.g. "
                                   "NEURODECODE_NSD_ROOT)")
    dl.add_argument("--subjects", help="subjects, e.g. 1,2 or 1-4 (default: all)")
    dl.add_argument("--sessions", help="sessions, e.g. 1-3 (NSD betas, THINGS-MEG raw, MEG-MASC; default: all)")
    dl.add_argument("--rois", help="NSD ROI files, e.g. nsdgeneral,streams (default: all)")
    dl.add_argument("--betas-format", choices=("hdf5", "nifti"), default="hdf5",
                    help="NSD betas format (default hdf5)")
    dl.add_argument("--no-stimuli", dest="stimuli", action="store_false",
                    help="leave out the stimuli (NSD images, THINGS-EEG2 image set, MEG-MASC audio)")
    dl.add_argument("--captions", action="store_true", help="NSD: also the COCO captions of the 73k images")
    dl.add_argument("--variant", help="THINGS-EEG2: official (default), atm or raw; THINGS-MEG: preprocessed "
                                      "(default), raw or both")
    dl.add_argument("--dry-run", action="store_true", help="list the files and their total size; download nothing")
    dl.add_argument("--jobs", type=int, default=4, help="files downloaded at once (default 4)")
    dl.add_argument("--mirror", action="append", metavar="URL|KIND=URL",
                    help="download from a mirror: a URL replaces the main host; s3=URL, osf=URL or hf=URL a "
                         "named one (repeatable)")
    dl.add_argument("--accept-nsd-terms", action="store_true",
                    help="accept the NSD Terms and Conditions (recorded once for your user account)")
    _add_verbosity(dl)


def _add_export_command(sub: Any) -> None:
    """The ``export`` command."""
    ex = sub.add_parser(
        "export", help="write a fitted run's decoder as a Hugging Face Hub model folder (optionally push it)",
        description="Write one decoder of a `neurodecode fit` run to OUT as a folder the Hugging Face Hub "
                    "accepts: model.safetensors, config.json and a README.md model card with the recipe, the "
                    "data and the retrieval metrics with their confidence intervals. Load it back with "
                    "BrainDecoder.from_pretrained(OUT or 'org/name').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  neurodecode export runs/demo exported/demo-mlp\n"
               "  neurodecode export runs/demo exported/demo-ridge --model ridge --license cc-by-4.0\n"
               "  HF_HUB_OFFLINE=0 neurodecode export runs/demo exported/demo-mlp --push-to-hub org/demo-mlp\n"
               "      (the command line is offline unless HF_HUB_OFFLINE=0; needs `hf auth login`)")
    ex.add_argument("run", help="a run folder written by `neurodecode fit`")
    ex.add_argument("out", help="the folder to write (must be empty or new unless --overwrite)")
    ex.add_argument("--model", default="mlp",
                    help="mlp (default), ridge, or a folder under RUN/models such as loso-subj01/mlp")
    ex.add_argument("--name", help="the model card's title (default: RUN's name and the model)")
    ex.add_argument("--license", help="a Hub license id for the card (default: other)")
    ex.add_argument("--tag", action="append", dest="tags", metavar="TAG", help="an extra Hub tag (repeatable)")
    ex.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the folder to this Hub model repo")
    ex.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    ex.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty OUT")
    _add_verbosity(ex)


def _run_export(args: argparse.Namespace) -> int:
    from .utils import use_log_level
    from .workflow import export_run

    with use_log_level(_level(args)):
        out = export_run(args.run, args.out, model=args.model, name=args.name, license=args.license,
                         tags=args.tags, push_to_hub=args.push_to_hub, private=args.private or None,
                         overwrite=args.overwrite)
    print(f"Model folder: {out} (model.safetensors, config.json, README.md)")
    if args.push_to_hub:
        print(f"Pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neurodecode`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        The parser, with one subcommand per command (``fit``, ``adapt``, ``config``, ...).
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="neurodecode",
        description="Decode brain signals (fMRI, MEG, EEG) into the stimuli that caused them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `neurodecode COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"neurodecode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_fit_command(sub)
    _add_evaluate_command(sub)
    _add_adapt_command(sub)
    _add_reconstruct_command(sub)
    _add_ablate_command(sub)
    _add_simulate_command(sub)
    _add_config_command(sub)
    _add_recipes_command(sub)
    _add_summarize_command(sub)
    _add_download_command(sub)
    _add_export_command(sub)
    return parser


def _config_help() -> str:
    from .config import describe_keys

    rows = describe_keys()
    width = max(len(k) for k, _, _ in rows)
    lines = ["Config keys (set in a YAML recipe or with --set KEY=VALUE):", ""]
    for key, default, desc in rows:
        lines.append(f"  {key:<{width}}  default: {default!r}")
        for chunk in textwrap.wrap(desc, 90):
            lines.append(f"  {'':<{width}}    {chunk}")
    return "\n".join(lines)


def _run_fit(args: argparse.Namespace) -> int:
    from .config import load_config
    from .utils import use_log_level
    from .workflow import run_fit

    if args.help_config:
        print(_config_help())
        return 0
    overrides = list(args.overrides)
    if args.root:
        overrides.append(f"data.root={args.root}")
    resume = getattr(args, "resume", None)
    if getattr(args, "sweep", None) or getattr(args, "seeds", None) or getattr(args, "launcher", None):
        from .workflow import run_sweep
        from .workflow.sweep import parse_seeds

        if resume is not None:
            raise ValueError("--resume continues one run folder; to continue a sweep, run the same sweep "
                             "command again (finished jobs are skipped, started ones resumed)")
        slurm = {"partition": args.slurm_partition, "time": args.slurm_time, "gpus_per_node": args.slurm_gpus,
                 "cpus_per_task": args.slurm_cpus, "mem": args.slurm_mem,
                 "array_parallelism": args.slurm_array_parallelism, "setup": args.slurm_setup or None}
        with use_log_level(_level(args)):
            res = run_sweep(args.recipe, overrides, grid=args.sweep, launcher=args.launcher or "local",
                            seeds=None if args.seeds is None else parse_seeds(args.seeds), output=args.output,
                            max_parallel=args.max_parallel, threads=args.threads, slurm=slurm,
                            job_log_level=_level(args), dry_run=args.dry_run)
        for job in res.jobs:
            extra = f"  (job {job['job_id']})" if job["job_id"] else ""
            print(f"{job['state']:<11} {job['name']}{extra}" + (f": {job['error']}" if job["error"] else ""))
        print(f"Sweep folder: {res.folder} (jobs, overrides, job ids and states in sweep.json)")
        if not res.dry_run:
            print(f"Summarize with: neurodecode summarize {res.folder}")
        return 1 if res.failed else 0
    config = load_config(args.recipe, overrides) if (resume is None or args.recipe or overrides) else None
    with use_log_level(_level(args)):
        _set_threads(args)
        result = run_fit(config, run_dir=args.output, resume=resume)
    if result.report_path.is_file():  # ranks > 0 of `accelerate launch` write no run folder
        print(f"Report: {result.report_path}")
    return 0


def _metric_weights(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for text in pairs:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--metric-weights takes NET=PATH (e.g. alexnet=~/weights/alexnet.pth), got {text!r}")
        out[name.strip()] = path.strip()
    return out


def _run_reconstruct(args: argparse.Namespace) -> int:
    from .utils import use_log_level
    from .workflow.reconstruct import run_reconstruct

    with use_log_level(_level(args)):
        result = run_reconstruct(args.run, args.generator, backend=args.backend, stage=args.stage,
                                 lowlevel_vae=args.lowlevel_vae, use_prior=not args.no_prior,
                                 prior_steps=args.prior_steps, limit=args.limit or None,
                                 n_samples=args.n_samples, steps=args.steps, strength=args.strength,
                                 seed=args.seed, batch_size=args.batch_size, device=args.device,
                                 size=args.size, output=args.output, captions=args.captions,
                                 metric_weights=_metric_weights(args.metric_weights))
    print(f"Gallery: {result.run_dir / 'gallery.html'}")
    return 0


def _run_ablate(args: argparse.Namespace) -> int:
    from .utils import use_log_level
    from .workflow import run_ablate

    with use_log_level(_level(args)):
        _set_threads(args)
        result = run_ablate(args.run, args.atlas, strategies=args.strategies, metrics=args.metrics,
                            model=args.model, n_null=args.n_null, n_null_retrain=args.n_null_retrain,
                            transforms=args.transforms, output=args.output)
    for key, top in result.metrics["top"].items():
        print(f"{key}: {top['region']} first (effect {top['effect']:.3f}, p = {top['p_value']:.3g}, "
              f"FDR {top['p_fdr']:.3g})")
    print(f"Report: {result.run_dir / 'report.html'}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from .config import load_config, parse_override
    from .utils import use_log_level
    from .workflow.evaluate import FAMILY_RECIPES, FAMILY_SETTINGS, parse_published, run_evaluate

    family, _ = parse_published(args.published)  # an unknown family or a missing file: before any work
    # the family's target settings go with its own recipe only, before the user's --set
    overrides = [*(FAMILY_SETTINGS.get(family, ()) if args.recipe is None else ()), *args.overrides]
    if args.root:
        overrides.append(f"data.root={args.root}")
    if args.subject:
        overrides.append(f"data.subjects=[{','.join(str(s) for s in args.subject)}]")
    recipe = args.recipe or FAMILY_RECIPES.get(family)
    if recipe is None:
        raise ValueError(f"no default recipe for the published family {family!r}: give a RECIPE")
    options = {}
    for text in args.options:
        path, value = parse_override(text)
        options[".".join(path)] = value
    config = load_config(recipe, overrides)
    with use_log_level(_level(args)):
        _set_threads(args)
        result = run_evaluate(args.published, config, run_dir=args.output, options=options)
    for subj, scores in result.metrics["models"]["mlp"].items():
        m = scores["metrics"]["nway_top1_forward"]
        print(f"{subj}: N-way top-1 {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] "
              f"(chance {m['chance']:.3f})")
    print(f"Report: {result.report_path}")
    return 0


def _run_adapt(args: argparse.Namespace) -> int:
    from .utils import use_log_level
    from .workflow import run_adapt

    with use_log_level(_level(args)):
        _set_threads(args)
        result = run_adapt(args.run, args.subject, data_root=args.data, fraction=args.fraction,
                           max_epochs=args.epochs, freeze_epochs=args.freeze_epochs, output=args.output)
    print(f"Adapted model and report: {result.run_dir}")
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from .config import parse_override
    from .datasets import simulate
    from .utils import use_log_level

    params: dict = {}
    if args.name == "nsd":  # the command line's NSD defaults are the demo's
        params = {"n_sessions": 6, "shared_fraction": 0.2, "trials_per_session": 750, "image_size": 64}
    for key in ("n_sessions", "shared_fraction", "trials_per_session", "image_size", "response"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    for text in args.params:
        path, value = parse_override(text)
        params[".".join(path)] = value
    with use_log_level(_level(args)):
        out = simulate(args.name, args.out_dir, n_subjects=args.n_subjects, seed=args.seed,
                       overwrite=args.overwrite, **params)
    print(f"Simulated {args.name} dataset: {out}")
    return 0


def _run_download(args: argparse.Namespace) -> int:
    from .datasets import download
    from .io.fetch import format_size
    from .utils import use_log_level

    try:
        with use_log_level(_level(args)):
            report = download(args.dataset, args.root, subjects=args.subjects, sessions=args.sessions,
                              rois=args.rois, betas_format=args.betas_format, stimuli=args.stimuli,
                              captions=args.captions, variant=args.variant, dry_run=args.dry_run, jobs=args.jobs,
                              base_url=args.mirror, accept_terms=args.accept_nsd_terms)
    except KeyboardInterrupt:
        print("neurodecode download: interrupted; files completed so far are verified and kept, partial ones "
              "as <name>.part. Run the same command again to resume.", file=sys.stderr)
        return 130
    if args.dry_run:
        for f in report.files:
            have = "  (present)" if f.path in report.present else ""
            print(f"  {format_size(f.size):>9}  {'[zip] ' if f.extract_to else ''}{f.path}{have}")
        print(f"total {len(report.files)} file(s), {format_size(report.total_size)} into {report.root}; "
              f"{len(report.present)} already present (dry run: nothing downloaded)")
        return 0
    print(report.summary())
    print(f"Next: neurodecode fit RECIPE --root {report.root}   (neurodecode recipes lists them)")
    return 0


def _run_recipes(args: argparse.Namespace) -> int:
    from .config import RECIPE_DIR, list_recipes

    recipes = list_recipes()
    width = max(len(name) for name in recipes)
    for name, summary in recipes.items():
        print(f"{name:<{width}}  {summary}")
        if args.path:
            print(f"{'':<{width}}  {RECIPE_DIR / (name + '.yaml')}")
    print("\nRun one with `neurodecode fit NAME` (add --root DIR for real data); "
          "print it with `neurodecode config NAME`.")
    return 0


def _run_summarize(args: argparse.Namespace) -> int:
    from .utils import use_log_level
    from .workflow import run_summarize

    with use_log_level(_level(args)):
        result = run_summarize(args.runs, output=args.output, metrics=args.metrics, models=args.models,
                               ci=args.ci)
    print(result.files["md"].read_text(), end="")
    print(f"\n{len(result.runs)} run(s) summarized" + (f"; {len(result.incomplete)} without results not counted"
                                                       if result.incomplete else ""))
    for kind, path in result.files.items():
        print(f"{kind:<4} {path}")
    return 0


def _run_config(args: argparse.Namespace) -> int:
    from .config import config_to_yaml, load_config

    print(config_to_yaml(load_config(args.recipe, args.overrides)), end="")
    return 0


#: The extra that installs each optional top-level module (``pip install 'neurodecode[EXTRA]'``).
OPTIONAL_EXTRAS = {"mne": "meeg", "mne_bids": "meeg", "nilearn": "fmri", "open_clip": "clip", "torchvision": "clip",
                   "diffusers": "generation", "transformers": "generation", "pycocoevalcap": "generation",
                   "skimage": "generation", "sklearn": "bench", "submitit": "cluster",
                   "tensorboard": "tracking"}

#: Optional modules no extra installs (the user picks them): how to install each.
OPTIONAL_PACKAGES = {"wandb": "pip install wandb", "mlflow": "pip install mlflow"}


def _missing_dependency(err: ImportError) -> str:
    """The message of an ImportError, with the extra to install when the missing module is an optional one."""
    text = str(err)
    if "pip install" in text:  # raised by neurodecode.utils.import_optional, which names the extra already
        return text
    name = (err.name or "").split(".")[0]
    extra = OPTIONAL_EXTRAS.get(name)
    if name in OPTIONAL_PACKAGES:
        return f"{text}: this command needs the optional package {name!r}: {OPTIONAL_PACKAGES[name]}"
    if extra is None:
        return f"{text} (a dependency is missing or broken; reinstall neurodecode with pip)"
    return f"{text}: this command needs the optional dependency {name!r}: pip install 'neurodecode[{extra}]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurodecode`` console script.

    Parameters
    ----------
    argv : sequence of str | None
        The command-line arguments, without the program name. None: ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The exit status: 0 on success, 1 on an error, 2 on a configuration error or no command,
        130 when interrupted.
    """
    import os

    from ._compat import ensure_torchvision
    from .config import ConfigError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never a silent download from the command line
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command not in _LIGHT_COMMANDS:  # the light ones never import torch(vision): they answer at once
        ensure_torchvision()
    handlers = {"adapt": _run_adapt, "fit": _run_fit, "simulate": _run_simulate, "config": _run_config,
                "reconstruct": _run_reconstruct, "ablate": _run_ablate, "recipes": _run_recipes,
                "download": _run_download,
                "evaluate": _run_evaluate,
                "export": _run_export,
                "summarize": _run_summarize}
    try:
        return handlers[args.command](args)
    except ConfigError as err:
        print(f"neurodecode {args.command}: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, OSError, KeyError) as err:
        print(f"neurodecode {args.command}: error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(f"neurodecode {args.command}: error: {_missing_dependency(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(_interrupted(args, err), file=sys.stderr)
        return 130


#: Commands that need neither torch nor torchvision (so the torchvision repair is not imported for them).
_LIGHT_COMMANDS = ("recipes", "download", "summarize")

#: Commands that write a new folder from a fitted run and cannot resume.
_NO_RESUME = ("adapt", "ablate", "reconstruct")


def _interrupted(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """What Ctrl-C left behind, and how to go on."""
    name = f"neurodecode {args.command}"
    command = getattr(err, "resume_command", None)  # workflow.RunInterrupted (fit)
    if command is not None:
        if getattr(args, "threads", None) is not None:
            command += f" --threads {args.threads}"
        return (f"{name}: interrupted; the run folder {err.run_dir} is intact. "  # type: ignore[attr-defined]
                f"Continue it with:\n  {command}")
    if args.command not in _NO_RESUME:
        return f"{name}: interrupted; earlier outputs are intact."
    out = getattr(err, "out_dir", None)  # workflow._run.OutputInterrupted
    if out is None:
        left = "it stopped before writing its output, so nothing was written"
    elif err.removed:  # type: ignore[attr-defined]
        left = f"its incomplete output folder {out} was removed"
    elif err.cleared:  # type: ignore[attr-defined]
        left = f"what it had written into {out} was removed (the folder is empty)"
    else:
        left = (f"{out} held files before and was kept, so the files this command wrote there may be "
                "incomplete: delete them or pick another --output")
    return (f"{name}: interrupted; {left}; the run folder {args.run} and its earlier outputs are intact. "
            f"{name} cannot resume: run the same command again to start over.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""MCULoRA hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/mculora_search.py                   # paper space: LoRA ranks per layer group, orth weight, DPFT, lr
    python studies/mculora_search.py --space wide      # wider ranks and ranges, + dropout
    python studies/mculora_search.py --smoke-test      # 3 trials x 1 epoch
    python studies/mculora_search.py --address auto --workers-per-trial 2 --gpus-per-worker 1 --storage s3://bucket/results

Search spaces are declared at the bottom of models/mculora.py ("mculora", "paper" | "wide").
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="mculora",
        spaces=["paper", "wide"],
        description=__doc__.splitlines()[0],
        # a few minutes on 2 cores: quarter-size MOSI, a narrow 2-block model, one mask seed
        defaults={"dataset": "synthetic:mosi", "scale": 0.25, "epochs": 6, "trials": 6, "hidden": 32, "lr": 1e-3,
                  "mask_seeds": (0,)},
    )

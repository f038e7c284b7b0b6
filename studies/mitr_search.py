"""MITR-DNet hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/mitr_search.py                    # paper grid (Table II: MIB-TRL levels 1..5), synthetic MOSI
    python studies/mitr_search.py --space wide       # + filters, distillation / SimSiam / reconstruction weights, lr
    python studies/mitr_search.py --smoke-test       # 3 trials x 1 epoch
    python studies/mitr_search.py --address auto --workers-per-trial 2 --gpus-per-worker 1 --storage s3://bucket/results

Search spaces are declared in models/mitr_dnet.py ("mitr_dnet", "paper" | "wide").
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="mitr_dnet",
        spaces=["paper", "wide"],
        description=__doc__.splitlines()[0],
        # a few minutes on 2 cores: quarter-size MOSI, one mask seed (more: --mask-seeds 0,1,2)
        defaults={"dataset": "synthetic:mosi", "scale": 0.25, "epochs": 6, "trials": 6, "hidden": 24,
                  "mask_seeds": (0,)},
    )

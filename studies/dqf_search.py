"""DQF hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/dqf_search.py                     # paper grid (Table 5: layers x heads), synthetic MOSI
    python studies/dqf_search.py --space wide        # + lr, head width, dropout, aux-loss weight
    python studies/dqf_search.py --smoke-test        # 3 trials x 1 epoch
    python studies/dqf_search.py --address auto --workers-per-trial 2 --gpus-per-worker 1 --storage s3://bucket/results

Search spaces are declared in affectune.search_spaces ("dqf", "paper" | "wide").
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="dqf",
        spaces=["paper", "wide"],
        description=__doc__.splitlines()[0],
        # a few minutes on 2 cores: quarter-size MOSI, one mask seed (more: --mask-seeds 0,1,2)
        defaults={"dataset": "synthetic:mosi", "scale": 0.25, "epochs": 6, "trials": 6, "hidden": 24,
                  "mask_seeds": (0,)},
    )

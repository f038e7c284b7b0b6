"""UMDF hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/umdf_search.py                    # lambda1, lambda2, MCIM layers D, heads, lr; synthetic MOSI
    python studies/umdf_search.py --smoke-test       # 3 trials x 1 epoch
    python studies/umdf_search.py --dataset synthetic:iemocap --address auto --workers-per-trial 2 --gpus-per-worker 1

The search space is declared next to the model in models/umdf.py ("umdf", "distill"); its head
counts (2, 4, 5, 10) divide the width 20 used here and the paper's 40.
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="umdf",
        description=__doc__.splitlines()[0],
        # minutes on 2 cores: quarter-size MOSI when synthetic, one mask seed; the base config is UMDF.study_defaults
        defaults={"space": "distill", "dataset": "synthetic:mosi", "synthetic_scale": 0.25, "trials": 6, "mask_seeds": (0,)},
    )

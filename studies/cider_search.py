"""CIDer hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/cider_search.py                   # the authors' space: layers, heads, dropouts, 3 distillation weights
    python studies/cider_search.py --space wide      # + CV threshold, top-K, tau range, lr
    python studies/cider_search.py --smoke-test      # 3 trials x 1 epoch through Ray Train
    python studies/cider_search.py --dataset synthetic:iemocap --address auto --gpus-per-worker 1

Search spaces and the base config (`study_defaults`) live in models/cider.py ("cider", "paper" | "wide").
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="cider",
        description=__doc__.splitlines()[0],
        # a few minutes on 2 cores: quarter-size MOSI when synthetic, one mask seed; the base config is CIDer.study_defaults
        defaults={"dataset": "synthetic:mosi", "synthetic_scale": 0.25, "trials": 6, "mask_seeds": (0,)},
    )

"""DQF hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/dqf_search.py                     # Table 5's (layers, heads) pairs, synthetic MOSI
    python studies/dqf_search.py --space wide        # + lr, head width, dropout, aux-loss weight
    python studies/dqf_search.py --smoke-test        # 3 trials x 1 epoch
    python studies/dqf_search.py --preset paper      # the paper's recipe (SGD, lr 1e-5, batch 64, 100 epochs)
    python studies/dqf_search.py --dataset mmsa:/path/aligned_50.pkl
    python studies/dqf_search.py --address auto --workers-per-trial 2 --gpus-per-worker 1 --storage s3://bucket/results

Search spaces, presets and the base config (width, batch size, lr, epochs) are DQF's, declared at
the bottom of models/dqf.py; flags override them.
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="dqf",
        description=__doc__.splitlines()[0],
        # a few minutes on 2 cores: quarter-size MOSI when synthetic, one mask seed (more: --mask-seeds 0,1,2)
        defaults={"dataset": "synthetic:mosi", "synthetic_scale": 0.25, "trials": 6, "mask_seeds": (0,)},
    )

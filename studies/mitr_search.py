"""MITR-DNet hyper-parameter search on Ray: Tune + Optuna (TPE) + ASHA, Ray Train per trial.

    python studies/mitr_search.py                    # paper grid (Table II: MIB-TRL levels 1..5), synthetic MOSI
    python studies/mitr_search.py --space wide       # + filters, distillation / SimSiam / reconstruction weights, lr
    python studies/mitr_search.py --smoke-test       # 3 trials x 1 epoch
    python studies/mitr_search.py --address auto --workers-per-trial 2 --gpus-per-worker 1 --storage s3://bucket/results

Search spaces, presets and the base config are MITR-DNet's, declared in models/mitr_dnet.py;
flags override them.
"""

from affectune.studies.cli import study_main

if __name__ == "__main__":
    study_main(
        method="mitr_dnet",
        description=__doc__.splitlines()[0],
        # a few minutes on 2 cores: quarter-size MOSI when synthetic, one mask seed (more: --mask-seeds 0,1,2);
        # the base config is MITRDNet.study_defaults in models/mitr_dnet.py
        defaults={"dataset": "synthetic:mosi", "synthetic_scale": 0.25, "trials": 6, "mask_seeds": (0,)},
    )

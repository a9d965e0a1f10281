"""The task kinds (classification, regression, multi-label): scoring, plot data, report sections.

No Keras here: the evaluate stage predicts through `pipeline.modeling` and hands the task its
predictions; `kinds.py` names each kind's headline metric."""

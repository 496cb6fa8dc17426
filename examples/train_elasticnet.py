#!/usr/bin/env python3
"""Train an ElasticNet regression against the MLflow stack, the way the cloud tutorial does.

Reads the tracking URI and credentials from the environment (source the client env file the
mlflow_server role writes: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD,
MLFLOW_TRACKING_SERVER_CERT_PATH). The tutorial downloads the wine-quality CSV from the
internet; pass --csv PATH to use it (or any CSV whose last column, or --target, is the label).
Without --csv it uses scikit-learn's bundled diabetes regression dataset, so it runs offline.

Prints one JSON line with the run id, metrics, and the registered model version.
"""

import argparse
import json
import sys

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

import mlflow
import mlflow.sklearn
from mlflow.models import infer_signature


def load_data(csv_path, target):
    if csv_path:
        sep = ";" if open(csv_path).readline().count(";") > 0 else ","
        frame = pd.read_csv(csv_path, sep=sep)
        target = target or frame.columns[-1]
        return frame.drop(columns=[target]), frame[target], f"csv:{csv_path}"
    data = load_diabetes(as_frame=True)
    return data.data, data.target, "sklearn:diabetes"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="training data CSV (e.g. winequality-red.csv); default: sklearn diabetes")
    parser.add_argument("--target", help="label column of the CSV (default: the last column)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--l1-ratio", type=float, default=0.5)
    parser.add_argument("--experiment", default="elasticnet-demo")
    parser.add_argument("--model-name", default="elasticnet-demo")
    args = parser.parse_args(argv)

    features, labels, source = load_data(args.csv, args.target)
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=0.25, random_state=42)

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run() as run:
        model = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, random_state=42)
        model.fit(train_x, train_y)
        predicted = model.predict(test_x)
        metrics = {
            "rmse": float(np.sqrt(mean_squared_error(test_y, predicted))),
            "mae": float(mean_absolute_error(test_y, predicted)),
            "r2": float(r2_score(test_y, predicted)),
        }
        mlflow.log_params({"alpha": args.alpha, "l1_ratio": args.l1_ratio, "dataset": source})
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(train_x, predicted),
            input_example=train_x.head(3),
            registered_model_name=args.model_name,
        )

    version = info.registered_model_version
    loaded = mlflow.pyfunc.load_model(f"models:/{args.model_name}/{version}")
    check = loaded.predict(test_x.head(5))
    if not np.allclose(check, model.predict(test_x.head(5))):
        print("ERROR: the registered model loaded back predicts differently", file=sys.stderr)
        return 1
    print(json.dumps({
        "run_id": run.info.run_id,
        "experiment": args.experiment,
        "metrics": metrics,
        "model": args.model_name,
        "model_version": int(version),
        "predictions": [float(x) for x in check],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Coverage of the forecaster's prediction intervals, as the models give them and as calibrated: the
forecaster's own code (forecaster.plan: fit_at, Calibration) on the generator's price model, offline.

    .venv/bin/python bench/forecast_calibration.py [--bars 150] [--step 5] [--seed 42] [--symbols 10]

One run: per symbol of the default universe, --bars one-minute closes from the generator's GBM model
(generator/model.py, seeded by --seed and the symbol), then a backtest as `python -m forecaster --backtest`
does it: a fit every --step bars once min_bars are there, each model's interval calibrated on the scores
recorded so far (targets that had happened by the origin only), each fit's forecasts scored as their bars
come. Prints, per model, the share of actual closes inside the model's own interval and inside the
calibrated one, over the forecasts made once calibration had begun, and the factors used. No stack needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forecaster.config import ForecastConfig  # noqa: E402
from forecaster.plan import Calibration, fit_at  # noqa: E402
from generator.model import DEFAULT_SYMBOLS, GbmPriceModel, build_universe, derived_rng  # noqa: E402
from marketpulse.analytics.forecasting import MODEL_LABELS, MODELS  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402


def closes_of(spec, seed: int, bars: int, bar_seconds: int) -> list[float]:
    """The symbol's price at the end of each bar, quoted to the tick: the bar's close on a busy symbol."""
    model = GbmPriceModel(spec.start_price, spec.drift, spec.volatility,
                          derived_rng(seed, spec.symbol, "forecast-calibration"))
    closes = []
    for _ in range(bars):
        model.advance(bar_seconds)
        closes.append(model.quote())
    return closes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=150, help="one-minute bars per symbol")
    parser.add_argument("--step", type=int, default=5, help="bars between two fits (refit_minutes' bars)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--symbols", type=int, default=len(DEFAULT_SYMBOLS))
    args = parser.parse_args()
    config = ForecastConfig.from_settings(load_settings())
    bar_ms = config.bar_seconds * 1000
    calibration = Calibration(config)
    # per model: (score against the model's own interval, inside the calibrated one, factor or None)
    outcomes: dict[str, list[tuple[float, bool, float | None]]] = {model: [] for model in MODELS}
    started = time.monotonic()
    fits = 0
    for spec in build_universe(list(DEFAULT_SYMBOLS[:args.symbols]), args.seed):
        closes = closes_of(spec, args.seed, args.bars, config.bar_seconds)
        starts = [i * bar_ms for i in range(args.bars)]
        for origin in range(config.min_bars - 1, args.bars - 1, args.step):
            scales = {model: calibration.scale(spec.symbol, model, starts[origin]) for model in MODELS}
            fitted = fit_at(starts, closes, origin, config, scales=scales)
            fits += 1
            for score, inside in calibration.record(spec.symbol, starts, closes, fitted):
                outcomes[score.model].append((score.score, inside, scales[score.model]))
        print(f"  {spec.symbol}: {fits} fits so far, {time.monotonic() - started:.0f} s", file=sys.stderr,
              flush=True)

    level = config.interval_level
    print(f"\n{args.symbols} symbols x {args.bars} one-minute bars (seed {args.seed}), a fit every "
          f"{args.step} bars, {config.horizon_bars} bars ahead, {level:.0%} intervals; calibration: the "
          f"last {config.calibration_scores} scores per symbol and model, at least "
          f"{config.calibration_min_scores}")
    print(f"{'model':<14} {'forecasts':>9} {'own interval':>12} {'calibrated':>10} {'factor p10/p50/p90':>20}"
          f" {'not calibrated yet':>18}")
    for model in MODELS:
        rows = outcomes[model]
        calibrated = [row for row in rows if row[2] is not None]
        if not calibrated:
            print(f"{MODEL_LABELS[model]:<14} {len(rows):>9,} {'-':>12} {'-':>10}")
            continue
        own = sum(score <= 1 for score, _, _ in calibrated) / len(calibrated)
        inside = sum(ok for _, ok, _ in calibrated) / len(calibrated)
        factors = sorted(factor for _, _, factor in calibrated)
        deciles = "/".join(f"{factors[int(q * (len(factors) - 1))]:.2f}" for q in (0.1, 0.5, 0.9))
        print(f"{MODEL_LABELS[model]:<14} {len(calibrated):>9,} {own:>12.1%} {inside:>10.1%} {deciles:>20} "
              f"{len(rows) - len(calibrated):>18,}")
    print(f"({fits} fits in {time.monotonic() - started:.0f} s; 'own interval' is the model's interval as "
          "statsmodels/OLS give it, over the same forecasts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

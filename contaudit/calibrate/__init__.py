"""``contaudit calibrate``: measure the audit's power and false-positive rate on probe models.

* :mod:`~contaudit.calibrate.audits` -- the DiD audit's calibration (:func:`calibrate`);
* :mod:`~contaudit.calibrate.order` -- Oren et al.'s order test's (:func:`calibrate_order`);
* :mod:`~contaudit.calibrate.rates` -- rates per k, as-if-primary rates, exact intervals;
* :mod:`~contaudit.calibrate.report` -- the power curves and markdown summaries.
"""

from contaudit.calibrate.audits import CalibrationResult, CalibrationSetting, analysis_seed, calibrate, seed_of
from contaudit.calibrate.order import OrderCalibrationResult, calibrate_order
from contaudit.calibrate.rates import (LEAK_KINDS, clopper_pearson, detection_rates, if_primary, order_rates,
                                       rate_label, summarize)
from contaudit.calibrate.report import calibration_markdown, order_calibration_markdown, plot_order_power, plot_power_curve

__all__ = ["CalibrationResult", "CalibrationSetting", "analysis_seed", "calibrate", "seed_of",
           "OrderCalibrationResult", "calibrate_order", "LEAK_KINDS", "clopper_pearson", "detection_rates",
           "if_primary", "order_rates", "rate_label", "summarize", "calibration_markdown",
           "order_calibration_markdown", "plot_order_power", "plot_power_curve"]

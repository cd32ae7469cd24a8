"""The statistics behind `profile`'s trends, one method per module, on plain sequences of floats.

No I/O, no polars, no scipy (a few hundred lines of our own on numpy rather than a dependency):
`special` (normal CDF, regularized incomplete beta, Student t), `theil_sen` (the size of a
change), `mann_kendall` (its confidence, with exact null distributions where they are cheap),
`welch` (two-sample t-tests) and `step` (the change-point detector built on them). `arrays`
holds what they share: input checking and the base of a relative change. How they combine into
a direction is `stages.profile.trends`; the method and its calibration are in docs/trends.md.
"""

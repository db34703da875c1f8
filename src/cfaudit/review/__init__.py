"""Expert review of counterfactuals: a queue to rate, the ratings file, and what the ratings say.

* :mod:`~cfaudit.review.queue`: which edits a reviewer rates (from an edit folder or a discovery's candidates),
  written as ``review/queue.json`` with digests that detect a changed edit folder;
* :mod:`~cfaudit.review.ratings`: ``review/ratings.csv``, one row per reviewer and item, saved under a lock;
* :mod:`~cfaudit.review.agreement`: per candidate, the reviews and the share that confirmed it; kappa.

The page reviewers use is :mod:`cfaudit.ui.review_app`; the report's section is drawn by :mod:`cfaudit.report`.
"""

"""Static web leaderboard: run records + prediction cache -> a folder that opens from file://.

Room: presentation of stored records and cached predictions as an offline HTML site (the
``leaderboard --html DIR`` command). It never runs or scores anything: tables, confidence
intervals and eye checks come from :mod:`benchmark.leaderboard`, meshes from the prediction
cache, per-point scan errors from the score cache.

See :func:`write_site` and ``benchmark/site/writer.py`` for the layout of the written folder.
"""

from benchmark.site.writer import DEFAULT_SAMPLES_PER_SECTION, SITE_INDEX, write_site

__all__ = ["DEFAULT_SAMPLES_PER_SECTION", "SITE_INDEX", "write_site"]

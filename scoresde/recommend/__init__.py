"""``scoresde recommend``: the best samplers at an NFE budget, ranked from the committed benchmark
tables (:mod:`.tables`) by the error against exact solutions (:mod:`.exact_ranking`) or by the FID
of a trained model (:mod:`.fid_ranking`); the subcommand itself is :mod:`.command`."""

from .command import add_recommend_parser, usage_lines
from .exact_ranking import format_recommendation, recommend
from .fid_ranking import format_fid_recommendation, recommend_fid
from .tables import FULL_PROBLEMS, latest_table

__all__ = [
    "latest_table",
    "recommend",
    "format_recommendation",
    "recommend_fid",
    "format_fid_recommendation",
    "add_recommend_parser",
    "usage_lines",
    "FULL_PROBLEMS",
]

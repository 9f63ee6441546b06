"""Label the bibliography as the text cites: [Ho et al., 2020], not [HJA20].

The chapters cite author–year (``bibtex_reference_style: author_year``), but
pybtex's styles label a reference list with initials or numbers. This extension
registers the pybtex style ``author_year_unsrt``: unsrt's entries, kept in the
order the book cites them, labelled the way sphinxcontrib-bibtex's author–year
citations read (surnames, "and" for two authors, "et al." for more).
"""

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person):
    parts = person.rich_prelast_names + person.rich_last_names  # "van den" + "Oord"
    return " ".join(part.render_as("text") for part in parts)


class AuthorYearLabelStyle(BaseLabelStyle):
    """``Nichol and Dhariwal, 2021``; three or more authors: ``Ho et al., 2020``."""

    def format_label(self, entry):
        names = [_surname(p) for p in entry.persons.get("author") or entry.persons.get("editor") or []]
        who = f"{names[0]} et al." if len(names) > 2 else " and ".join(names) or entry.key
        return f"{who}, {entry.fields.get('year', 'n.d.')}"

    def format_labels(self, sorted_entries):
        return [self.format_label(entry) for entry in sorted_entries]


class AuthorYearUnsrtStyle(UnsrtStyle):
    default_label_style = AuthorYearLabelStyle


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year_unsrt", AuthorYearUnsrtStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

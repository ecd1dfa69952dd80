"""The report of a results CSV: the papers' claims as data (`claims`), judging them (`verdicts`),
the figures (`plots`) and the markdown page that holds them all (`page`); nothing is measured here."""

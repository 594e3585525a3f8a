"""Where the rows come from: a CSV or Excel list read into rows of text
(:mod:`.recipients`), every cell as the person sees it in the sheet."""

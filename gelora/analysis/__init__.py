"""Reading runs back: paired intervals, tables of results and claims, what blocks needed."""

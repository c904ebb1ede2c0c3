// A table whose column headings sort it: each sortable heading is a <th data-key="…"> holding a button
// (so the keyboard reaches it), and the heading sorted on carries aria-sort. Selecting the sorted
// heading again reverses the order.

export interface SortableTable<Row> {
  /** Replaces the rows and shows them in the current order. */
  show(rows: Row[]): void;
}

export interface SortableOptions<Row> {
  /** The key sorted on at first, ascending. */
  initialKey: keyof Row;
  /** The order of rows whose sort key is equal, whatever the key, so the table is stable. */
  tieBreak: (left: Row, right: Row) => number;
  /** Writes one row's cells into `tr`. */
  render: (tr: HTMLTableRowElement, row: Row) => void;
}

export function sortableTable<Row>(table: HTMLTableElement, options: SortableOptions<Row>): SortableTable<Row> {
  let rows: Row[] = [];
  let sortKey = options.initialKey;
  let ascending = true;
  const headings = Array.from(table.tHead!.rows[0].cells).filter((th) => th.dataset.key !== undefined);

  const render = () => {
    const direction = ascending ? 1 : -1;
    const sorted = [...rows].sort((a, b) => {
      const left = a[sortKey];
      const right = b[sortKey];
      const order = left < right ? -1 : left > right ? 1 : 0;
      return order * direction || options.tieBreak(a, b);
    });
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const row of sorted) options.render(body.insertRow(), row);
    for (const th of headings) {
      if (th.dataset.key === sortKey) {
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
  };

  for (const th of headings) {
    th.querySelector("button")!.addEventListener("click", () => {
      const key = th.dataset.key as keyof Row;
      ascending = key === sortKey ? !ascending : true;
      sortKey = key;
      render();
    });
  }
  return {
    show(next: Row[]) {
      rows = next;
      render();
    },
  };
}

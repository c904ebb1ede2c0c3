// One line chart per series (uPlot: small, canvas, no dependencies). The figure's caption carries the
// figures a screen reader (and the browser test) needs; the table beside the charts has every value.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const charts = new Map<string, uPlot>();

export function drawSeries(containerId: string, label: string, periods: Date[], values: number[], color: string) {
  const container = document.getElementById(containerId)!;
  charts.get(containerId)?.destroy();
  charts.delete(containerId);
  if (periods.length === 0) {
    return;
  }
  const width = Math.max(280, Math.min(container.parentElement!.clientWidth - 8, 640));
  const chart = new uPlot(
    {
      width,
      height: 220,
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      series: [
        {},
        { label, stroke: color, width: 2, fill: `${color}22`, points: { show: true, size: 6 } },
      ],
      axes: [{ stroke: "#222" }, { stroke: "#222" }],
      scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      legend: { show: true },
    },
    [periods.map((period) => period.getTime() / 1000), values],
    container,
  );
  charts.set(containerId, chart);
}

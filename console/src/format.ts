// What every panel of the page shares: finding its elements, and writing times, counts and rejection
// reasons the same way.
import { RejectionReason } from "./gen/hourglass/v1/ingest_pb.js";

export const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

// Every time is UTC, shown as "2026-11-29 13:00".
export const utcText = (date: Date | undefined) =>
  date === undefined ? "" : date.toISOString().slice(0, 16).replace("T", " ");
export const count = (value: bigint | number) => value.toLocaleString("en-US");

export function cell(row: HTMLTableRowElement, text: string, className?: string): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** A total row's heading cell, as the first cell of `row`. */
export function totalHeading(row: HTMLTableRowElement, text = "Total") {
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = text;
  row.append(th);
}

/** A rejection reason (or a tracking-plan rule) as the page names it: the proto enum's name in words
 * ("event type empty", "property type mismatch"). */
export function reasonLabel(reason: RejectionReason): string {
  if (reason === RejectionReason.UNSPECIFIED) return "unknown reason";
  // A reason newer than this page's generated client has no name here, only its number.
  const name: string | undefined = RejectionReason[reason];
  return name === undefined ? `reason ${reason}` : name.toLowerCase().replaceAll("_", " ");
}

// The web build's entry (vite.config.ts swaps it in for src/main.tsx in `--mode web`): the same App
// as the desktop, on the web back end, with a line saying what this page keeps where.
import { render } from "preact";
import { App } from "../App";
import "../styles.css";
import { StorageNote } from "./StorageNote";

const root = document.getElementById("app");
if (root)
  render(
    <>
      <App />
      <StorageNote />
    </>,
    root,
  );

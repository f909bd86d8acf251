// glimpsed's pages: plain JavaScript that polls the JSON API (the CLI's --json shapes) once a second.
"use strict";
window.glimpsed = (() => {
  const POLL_MS = 1000;
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  };
  const get = async (url) => {
    const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  };
  const poll = (url, render) => {
    const tick = async () => {
      try { render(await get(url)); } catch (e) { console.warn(e); }
      setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS);
  };
  const progress = (value) => el("progress", {max: "1", value: String(value || 0)});
  const age = (t) => {
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
  };

  function renderStatus(status) {
    const d = status.daemon;
    const box = document.getElementById("daemon");
    box.replaceChildren(el("h2", {}, "Daemon"));
    if (!d) {
      box.append(el("p", {}, "The daemon never ran with this store."));
    } else {
      const running = d.fresh ? d.state : "not running";
      box.append(el("p", {class: `daemon ${running.replace(" ", "-")}`},
        `${running} · pid ${d.pid} on ${d.host} · up ${age(d.started_at)}` + (d.watch_mode ? ` · watching by ${d.watch_mode}` : "")));
      if (d.message) box.append(el("p", {class: "paused"}, `Paused: ${d.message}`));
    }
    const counts = document.getElementById("counts");
    counts.replaceChildren(...Object.entries(status.counts).map(([state, n]) =>
      el("a", {class: `count ${state}`, href: `/jobs?state=${state}`}, el("b", {}, String(n)), ` ${state}`)));
    const workers = document.getElementById("workers");
    const lines = d && d.fresh ? d.workers : [];
    const worker = (line) => {   // a local worker's line names its pid, and its job's lease owner is host:pid
      const pid = (line.match(/\(pid (\d+)\)/) || [])[1];
      const job = pid && status.running.find((j) => (j.lease_owner || "").endsWith(`:${pid}`));
      if (!job) return el("li", {}, `${line}: ${/: running/.test(line) ? "" : "idle"}`.replace(/: $/, ""));
      return el("li", {}, `${line}: `, el("a", {href: `/jobs/${job.id}`}, job.source_name),
                ` ${job.stage || "starting"} `, progress(job.progress), ` ${job.progress_message || ""}`);
    };
    workers.replaceChildren(...(lines.length ? lines.map(worker) : [el("li", {}, "none running")]));
    if (d && d.cluster) {
      for (const n of d.cluster.nodes) {
        workers.append(el("li", {class: "node"}, `node ${n.host} (${n.address}): ${n.gpus} GPU${n.alive ? "" : ", down"}`));
      }
    }
    const rows = document.getElementById("running");
    rows.replaceChildren(...status.running.map((j) => el("tr", {"data-job": j.id},
      el("td", {}, el("a", {href: `/jobs/${j.id}`}, j.source_name)), el("td", {}, j.stage || "starting"),
      el("td", {}, progress(j.progress)), el("td", {}, j.progress_message || ""),
      el("td", {}, `attempt ${j.attempts}`))));
    if (!status.running.length) rows.append(el("tr", {}, el("td", {}, "No job is running.")));
  }

  function dashboard() {
    renderStatus(JSON.parse(document.getElementById("initial").textContent));
    poll("/api/status", renderStatus);
  }

  function jobList() {
    const body = document.getElementById("job-rows");
    const state = body.dataset.state;
    const page = Number(body.dataset.page);
    const url = `/api/jobs?limit=50&offset=${(page - 1) * 50}` + (state ? `&state=${state}` : "");
    poll(url, (jobs) => {
      if (!jobs.length) return;
      body.replaceChildren(...jobs.map((j) => el("tr", {"data-job": j.id},
        el("td", {}, el("a", {href: `/jobs/${j.id}`}, j.id)), el("td", {}, j.source_name),
        el("td", {class: `state ${j.state}`}, j.state), el("td", {class: "stage"}, j.stage || ""),
        el("td", {}, progress(j.progress)), el("td", {}, String(j.attempts)),
        el("td", {}, new Date(j.created_at * 1000).toLocaleString()))));
    });
  }

  function jobPage() {
    const badge = document.getElementById("job-state");
    const id = badge.dataset.job;
    for (const button of document.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        const response = await fetch(`/api/jobs/${id}/${button.dataset.action}`,
                                     {method: "POST", credentials: "same-origin"});
        if (!response.ok) alert(`${button.dataset.action}: ${(await response.json()).detail}`);
        location.reload();
      });
    }
    poll(`/api/jobs/${id}`, (detail) => {
      const job = detail.job;
      if (job.state !== badge.dataset.state) { location.reload(); return; }
      const bar = document.getElementById("progress");
      if (bar) {
        bar.value = job.progress || 0;
        document.getElementById("progress-text").textContent = `${job.stage || "starting"} ${job.progress_message || ""}`;
      }
    });
  }

  return {dashboard, jobList, jobPage};
})();

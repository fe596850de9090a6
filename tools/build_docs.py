"""Build a browsable HTML doc site in `_site/` without Quarto, or `--check` the built site.

Notebooks are processed by nbdev (`proc_nbs`, into `_proc/`), then converted page by page with nbconvert."""
import argparse, html, importlib, os, posixpath, re, shutil, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
import nbformat, yaml
from nbconvert import HTMLExporter, MarkdownExporter
from traitlets.config import Config
from pygments.formatters import HtmlFormatter

ROOT = Path(__file__).resolve().parent.parent
SITE = '_site'
_MATHJAX = ('<script>MathJax = {tex: {inlineMath: [["$","$"], ["\\\\(","\\\\)"]]}};</script>\n'
            '<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>')
_CSS = """body {margin: 0; font: 16px/1.5 system-ui, sans-serif; color: #222; display: flex}
nav.sidebar {flex: 0 0 15em; padding: 1em; background: #f6f7f9; min-height: 100vh; font-size: 0.95em}
nav.sidebar .site {font-weight: bold; font-size: 1.2em; text-decoration: none}
nav.sidebar h4 {margin: 1.2em 0 0.3em; color: #666; text-transform: uppercase; font-size: 0.8em}
nav.sidebar ul {list-style: none; padding-left: 0.5em; margin: 0}
nav.sidebar a.current {font-weight: bold}
main {flex: 1; max-width: 52em; padding: 1em 2em}
p.description {font-size: 1.15em; color: #555} p.source-link {float: right; font-size: smaller}
a {color: #2c6fbb} a.anchor-link {visibility: hidden; margin-left: 0.3em; text-decoration: none}
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link, h4:hover a.anchor-link {visibility: visible}
pre {padding: 0.6em; overflow-x: auto; font-size: 0.9em} .input_area pre {background: #f6f7f9; border-radius: 4px}
.output_area pre {margin: 0.3em 0} .output_stderr pre {background: #fdf0f0} .output_error pre {background: #fbdada}
.output_area img {max-width: 100%} table {border-collapse: collapse} td, th {border: 1px solid #ddd; padding: 0.2em 0.5em}
"""

def notebooks(nbs):
    "Paths, relative to `nbs`, of the notebooks that get a page (none under names starting with `_` or `.`)"
    return sorted(p.relative_to(nbs) for p in nbs.rglob('*.ipynb') if not any(o[0] in '_.' for o in p.relative_to(nbs).parts))

def frontmatter(nb):
    "The YAML frontmatter nbdev puts in the first raw cell of a processed notebook"
    c = nb.cells[0] if nb.cells else None
    if not c or c.cell_type != 'raw' or not c.source.startswith('---'): return {}
    return yaml.safe_load(c.source.strip().strip('-')) or {}

def page_path(proc_nb, rel):
    "Page for notebook `rel`: its `output-file`, as Quarto names it, else the notebook's name with `.html`"
    return rel.with_name(frontmatter(nbformat.read(proc_nb, as_version=4)).get('output-file') or rel.stem + '.html')

def title_of(nb):
    "Text of the first `# Title` markdown line in `nb`"
    for c in nb.cells:
        m = re.search(r'^# (.+)$', c.source, re.M) if c.cell_type == 'markdown' else None
        if m: return m.group(1).strip()
    return ''

def sidebar(nbs):
    "(group, notebook) for each page listed in `nbs/sidebar.yml`: top level is Home, sections go by name"
    sb = nbs/'sidebar.yml'
    def walk(group, item):
        if isinstance(item, str): yield group, item
        elif isinstance(item, dict):
            if item.get('href'): yield item.get('section', group), item['href']
            for o in item.get('contents', []): yield from walk(item.get('section', group), o)
    contents = (yaml.safe_load(sb.read_text()) or {}).get('website', {}).get('sidebar', {}).get('contents', []) if sb.exists() else []
    for o in contents: yield from walk('Home', o)

def nav_groups(nbs, rels):
    "(group, [notebook]) in `sidebar.yml` order; notebooks it does not list are grouped by folder"
    groups, seen = {}, set()
    dflt = {'.': 'Home', 'api': 'API', 'tutorials': 'Tutorials'}
    items = [(g, Path(o)) for g, o in sidebar(nbs)] + [(dflt.get(str(r.parent), str(r.parent).title()), r) for r in rels]
    for g, r in items:
        if r in rels and r not in seen: groups.setdefault(g, []).append(r); seen.add(r)
    return list(groups.items())

def _directives(src):
    "Split the leading `#| key: value` lines off `src`, returning (directives, rest)"
    lines, d = src.splitlines(), {}
    while lines and lines[0].startswith('#|'):
        k, _, v = lines.pop(0)[2:].partition(':')
        d[k.strip()] = v.strip().lower()
    return d, '\n'.join(lines)

def clean(nb):
    "Drop the frontmatter and what nbdev/execnb add outside the nbformat schema; apply Quarto's `include`, `echo`, `output`"
    cells = []
    for c in nb.cells[1 if frontmatter(nb) else 0:]:
        for k in set(c) - {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}: del c[k]
        c.metadata = nbformat.NotebookNode(tags=c.metadata.get('tags', []))
        if c.cell_type == 'code':
            d, c.source = _directives(c.source)
            if d.get('output') == 'false': c.outputs = []
            no_input = d.get('echo') == 'false' or not c.source.strip()
            if d.get('include') == 'false' or (no_input and not c.outputs): continue
            if no_input: c.metadata.tags.append('remove_input')
        cells.append(c)
    nb.cells = cells
    return nb

def _relink(body, rel, pages, site_url):
    "Point links at notebooks (relative, or on the hosted site) to their pages in `_site`"
    here, by_url = rel.parent.as_posix(), {p.as_posix(): p for p in pages.values()}
    def fix(m):
        path, sep, frag = html.unescape(m.group(1)).partition('#')
        if site_url and path.startswith(site_url): target = by_url.get(path[len(site_url):].removesuffix('.md'))
        elif path.endswith('.ipynb') and not re.match(r'[a-zA-Z][\w+.-]*:', path):
            target = pages.get(Path(posixpath.normpath(posixpath.join(here, unquote(path)))))
        else: target = None
        return m.group(0) if target is None else f'href="{html.escape(posixpath.relpath(target.as_posix(), here) + sep + frag)}"'
    return re.sub(r'href="([^"]*)"', fix, body)

def _quartoish(body):
    "Lowercase heading ids as Quarto does (nbdev links to `#name`), and turn show_doc's pandoc-styled source link into HTML"
    body = re.sub(r'(<h[1-6] id="|class="anchor-link" href="#)([^"]*)', lambda m: m.group(1) + m.group(2).lower(), body)
    return re.sub(r'<p><a href="([^"]*)">source</a>\{[^}]*\}</p>', r'<p class="source-link"><a href="\1" target="_blank">source</a></p>', body)

def _nav(groups, pages, titles, rel):
    "Sidebar HTML linking every page, relative to the page of `rel`"
    up = lambda p: posixpath.relpath(p.as_posix(), rel.parent.as_posix())
    cur = ' class="current"'
    home = pages.get(Path('index.ipynb'))
    out = [f'<a class="site" href="{up(home)}">{html.escape(titles["_site"])}</a>' if home else f'<b class="site">{html.escape(titles["_site"])}</b>']
    for g, items in groups:
        out.append(f'<h4>{html.escape(g)}</h4><ul>')
        out += [f'<li><a href="{up(pages[r])}"{cur if r == rel else ""}>{html.escape(titles[r])}</a></li>' for r in items]
        out.append('</ul>')
    return '\n'.join(out)

def readme_text(proc, cfg):
    "README.md for the processed `index.ipynb` in `proc`: its title, summary and cells as GitHub markdown, without figures"
    nb = nbformat.read(proc/cfg.readme_nb, as_version=4)
    fm = frontmatter(nb)
    nb = clean(nb)
    nb.metadata['language_info'] = {'name': 'python'}
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = [o for o in c.outputs if o.output_type == 'stream' or not
                                               any(k.startswith('image/') for k in o.get('data', {}))]
    body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    head = f"# {fm.get('title', cfg.title)}\n\n" + (f"> {fm['description']}\n\n" if fm.get('description') else '')
    return head + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'

def build(root=ROOT, force=False):
    "Process the notebooks with nbdev and write one HTML page per notebook into `root/_site`"
    from nbdev.config import get_config
    from nbdev.serve import proc_nbs  # not `nbdev_proc_nbs`, which also makes sure Quarto is installed
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    os.chdir(root)  # nbdev's processors read the config from the working directory
    cfg = get_config(root)
    nbs, site = cfg.nbs_path, root/SITE
    try: proc = proc_nbs(nbs, force=force)
    except Exception as e: raise SystemExit(f'nbdev could not process the notebooks (`nbdev-docs` would fail the same way):\n{e}')
    rels = notebooks(nbs)
    pages = {r: page_path(proc/r, r) for r in rels}
    titles = {r: title_of(nbformat.read(nbs/r, as_version=4)) or frontmatter(nbformat.read(proc/r, as_version=4)).get('title') or r.stem for r in rels}
    titles['_site'] = cfg.title
    groups = nav_groups(nbs, rels)
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(proc, site, ignore=shutil.ignore_patterns('*.ipynb', '*.yml', '.*'))
    (site/'site.css').write_text(_CSS + HtmlFormatter().get_style_defs('.highlight'))
    conf = Config(TagRemovePreprocessor=dict(enabled=True, remove_input_tags={'remove_input'}))
    exporter = HTMLExporter(config=conf, template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)
    site_url = f'{cfg.doc_host}{cfg.doc_baseurl}'.rstrip('/') + '/' if cfg.doc_host else ''
    (root/'README.md').write_text(readme_text(proc, cfg), encoding='utf-8')
    for r in rels:
        nb = nbformat.read(proc/r, as_version=4)
        desc = frontmatter(nb).get('description')
        body, _ = exporter.from_notebook_node(clean(nb))
        css = posixpath.relpath('site.css', r.parent.as_posix())
        page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f'<title>{html.escape(titles[r])} – {html.escape(cfg.title)}</title>\n<link rel="stylesheet" href="{css}">\n{_MATHJAX}\n'
                f'</head><body>\n<nav class="sidebar">{_nav(groups, pages, titles, r)}</nav>\n<main>\n'
                f'<h1 class="title">{html.escape(titles[r])}</h1>\n' + (f'<p class="description">{html.escape(desc)}</p>\n' if desc else '')
                + _relink(_quartoish(body), r, pages, site_url) + '\n</main></body></html>\n')
        (site/pages[r]).parent.mkdir(parents=True, exist_ok=True)
        (site/pages[r]).write_text(page, encoding='utf-8')
    print(f'Wrote {len(rels)} pages to {site}')
    return site

class _Page(HTMLParser):
    "The title, headings, links and error outputs of one HTML page"
    def __init__(self, text):
        super().__init__()
        self.title, self.heads, self.urls, self.errors, self._in, self._buf = '', set(), [], 0, None, ''
        self.feed(text)
        self.errors = max(self.errors, text.count('Traceback (most recent call last)'))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [a[k] for k in ('href', 'src') if a.get(k)]
        if 'output_error' in (a.get('class') or '').split(): self.errors += 1
        if tag == 'title' or re.fullmatch('h[1-6]', tag): self._in, self._buf = tag, ''

    def handle_endtag(self, tag):
        if tag != self._in: return
        if tag == 'title': self.title = self._buf.strip()
        else: self.heads.add(self._buf.replace('¶', '').strip())
        self._in = None

    def handle_data(self, data):
        if self._in: self._buf += data

def _default_exp(nb):
    "Module named by the `#| default_exp` line of `nb`, if any"
    for c in nb.cells:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', c.source, re.M) if c.cell_type == 'code' else None
        if m: return m.group(1)

def check(root=ROOT):
    "List the problems of the site built in `root/_site`"
    from nbdev.config import get_config
    cfg = get_config(root)
    nbs, site, proc = cfg.nbs_path, root/SITE, cfg.config_path/'_proc'
    if not site.is_dir(): return [f'{site} does not exist: run `python tools/build_docs.py` first']
    problems, rels = [], notebooks(nbs)
    if (proc/cfg.readme_nb).exists() and (root/'README.md').read_text(encoding='utf-8') != readme_text(proc, cfg):
        problems.append(f'README.md is not what nbs/{cfg.readme_nb} gives: run `python tools/build_docs.py` and commit it')
    problems += [f'nbs/sidebar.yml lists {o}, which does not exist' for _, o in sidebar(nbs) if not (nbs/o).exists()]
    if str(root) not in sys.path: sys.path.insert(0, str(root))
    for r in rels:
        src = f'nbs/{r.as_posix()}'
        if not (proc/r).exists():
            problems.append(f'{src}: not processed into {proc}'); continue
        page = site/page_path(proc/r, r)
        if not page.exists():
            problems.append(f'{src}: no page {page.relative_to(root)}'); continue
        p, where = _Page(page.read_text(encoding='utf-8')), page.relative_to(root)
        if not p.title.removesuffix(f' – {cfg.title}').strip(): problems.append(f'{where}: empty <title>')
        if p.errors: problems.append(f'{where}: shows {p.errors} error output(s)/traceback(s) (fix the cell in {src} and rerun it)')
        for u in p.urls:
            path = unquote(u.split('#')[0].split('?')[0])
            if not path or re.match(r'[a-zA-Z][a-zA-Z0-9+.-]*:|//', u): continue
            target = (page.parent/path).resolve()
            if target.is_dir(): target = target/'index.html'
            if not target.exists() or site.resolve() not in target.parents: problems.append(f'{where}: link {u!r} does not resolve to a file in {SITE}/')
        if r.parts[0] != 'api' or len(r.parts) != 2: continue
        mod = _default_exp(nbformat.read(nbs/r, as_version=4))
        if not mod:
            problems.append(f'{src}: API notebook has no `#| default_exp` line'); continue
        try: names = getattr(importlib.import_module(f'{cfg.lib_path.name}.{mod}'), '__all__')
        except Exception as e:
            problems.append(f'{src}: could not read {cfg.lib_path.name}.{mod}.__all__ ({type(e).__name__}: {e})'); continue
        missing = [n for n in names if n not in p.heads]
        if missing: problems.append(f'{where}: no show_doc entry for {", ".join(missing)} (exported by {cfg.lib_path.name}.{mod})')
    return problems

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--check', action='store_true', help='check the built site instead of building it')
    p.add_argument('--force', action='store_true', help="reprocess every notebook, ignoring nbdev's `_proc/` cache")
    args = p.parse_args()
    if not args.check:
        build(force=args.force)
        return 0
    problems = check()
    print('\n'.join(['Doc site problems:'] + [f'  - {o}' for o in problems]) if problems else f'Doc site OK: {SITE}/')
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())

// MathJax 3 for the course site (loaded before assets/mathjax.js, which is MathJax's tex-svg-full.js).
// Only notebook content is typeset (.jupyter-wrapper): a "$" in a README's prose stays a dollar sign.
window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
        processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: "md-content", processHtmlClass: "jupyter-wrapper"},
  svg: {fontCache: "global"},
};

// Two small hand-written SVG charts for the evaluation report: grouped bars (a metric per language and
// direction, before vs after) and lines (training losses against the step). Plain SVG 1.1 text with axes,
// ticks, labels and a legend; every text is XML-escaped, so the output is well-formed whatever the labels.
#pragma once
#include <string>
#include <vector>

namespace xv {

struct BarSeries {
  std::string name;            // legend entry
  std::vector<double> values;  // (groups); NaN: no bar
};

// `groups` label the x axis; each group has one bar per series. The y axis runs from 0 to y_max (0: the
// largest value, rounded up to a tick).
std::string svg_grouped_bars(const std::string& title, const std::vector<std::string>& groups,
                             const std::vector<BarSeries>& series, const std::string& y_label, double y_max = 0);

struct LineSeries {
  std::string name;     // legend entry
  std::vector<double> x, y;  // (n) each; non-finite points are skipped
};

std::string svg_lines(const std::string& title, const std::vector<LineSeries>& series, const std::string& x_label,
                      const std::string& y_label);

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

std::string xml_escape(const std::string& s);

}  // namespace xv

// SVG charts (eval/svg_chart.h). The layout is fixed (a plot area with margins for the axis labels and the
// legend on the right); coordinates are written with two decimals, enough for a screen.
#include "eval/svg_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace xv {

namespace {

// Colour-blind-safe palette (Okabe-Ito): before grey, after blue, then the rest.
const char* const kColours[] = {"#999999", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9"};
const char* colour(size_t i) { return kColours[i % (sizeof(kColours) / sizeof(kColours[0]))]; }

struct Frame {
  double width, height;          // whole picture
  double left, right, top, bottom;  // plot area edges in pixels
  double x(double v, double lo, double hi) const { return left + (v - lo) / (hi - lo) * (right - left); }
  double y(double v, double lo, double hi) const { return bottom - (v - lo) / (hi - lo) * (bottom - top); }
};

std::string tick_label(double v, double step) {
  // As many decimals as the step needs, and no "-0".
  const int decimals = step >= 1 ? 0 : std::min(6, int(std::ceil(-std::log10(step) - 1e-9)));
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.find_first_not_of("-0.") == std::string::npos) s = decimals ? fmt::format("{:.{}f}", 0.0, decimals) : "0";
  return s;
}

std::string header(const Frame& f, const std::string& title) {
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n",
      f.width, f.height, f.width, f.height);
  s += fmt::format("<rect x=\"0\" y=\"0\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"white\"/>\n", f.width, f.height);
  s += fmt::format("<text x=\"{:.2f}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
                   (f.left + f.right) / 2, xml_escape(title));
  return s;
}

// The y axis with its ticks and grid lines, and the axis title rotated along it.
std::string y_axis(const Frame& f, const std::vector<double>& ticks, double lo, double hi, const std::string& label) {
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  std::string s;
  for (const double t : ticks) {
    const double py = f.y(t, lo, hi);
    s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"#e0e0e0\"/>\n", f.left, py,
                     f.right, py);
    s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"black\"/>\n", f.left - 5, py,
                     f.left, py);
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"end\">{}</text>\n", f.left - 8, py + 4,
                     xml_escape(tick_label(t, step)));
  }
  s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"black\"/>\n", f.left, f.top,
                   f.left, f.bottom);
  const double cy = (f.top + f.bottom) / 2;
  s += fmt::format("<text x=\"18\" y=\"{:.2f}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.2f})\">{}</text>\n",
                   cy, cy, xml_escape(label));
  return s;
}

std::string legend(const Frame& f, const std::vector<std::string>& names, bool lines) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) {
    const double y = f.top + 10 + 20 * double(i);
    if (lines)
      s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"{}\" stroke-width=\"2\"/>\n",
                       f.right + 15, y, f.right + 35, y, colour(i));
    else
      s += fmt::format("<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"20\" height=\"12\" fill=\"{}\"/>\n", f.right + 15, y - 6,
                       colour(i));
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\">{}</text>\n", f.right + 42, y + 4, xml_escape(names[i]));
  }
  return s;
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab and newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi <= lo) hi = lo + (lo == 0 ? 1 : std::abs(lo) * 0.1);
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  const double first = std::floor(lo / step) * step, last = std::ceil(hi / step) * step;
  for (double v = first; v <= last + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

std::string svg_grouped_bars(const std::string& title, const std::vector<std::string>& groups,
                             const std::vector<BarSeries>& series, const std::string& y_label, double y_max) {
  const double group_w = 22.0 * double(std::max<size_t>(1, series.size())) + 24;
  Frame f;
  f.left = 60;
  f.top = 35;
  f.right = f.left + std::max(240.0, group_w * double(groups.size()));
  f.bottom = 265;
  f.width = f.right + 140;
  f.height = 320;
  double vmax = 0;
  for (const auto& s : series)
    for (const double v : s.values)
      if (std::isfinite(v)) vmax = std::max(vmax, v);
  const std::vector<double> ticks = nice_ticks(0, y_max > 0 ? y_max : (vmax > 0 ? vmax : 1));
  const double hi = ticks.back();

  std::string s = header(f, title);
  s += y_axis(f, ticks, 0, hi, y_label);
  const double slot = (f.right - f.left) / double(std::max<size_t>(1, groups.size()));
  const double bar_w = std::min(22.0, (slot - 12) / double(std::max<size_t>(1, series.size())));
  for (size_t g = 0; g < groups.size(); ++g) {
    const double x0 = f.left + slot * double(g) + (slot - bar_w * double(series.size())) / 2;
    for (size_t k = 0; k < series.size(); ++k) {
      const double v = g < series[k].values.size() ? series[k].values[g] : std::nan("");
      if (!std::isfinite(v)) continue;
      const double top = f.y(std::clamp(v, 0.0, hi), 0, hi);
      s += fmt::format("<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" fill=\"{}\"><title>{}: {}</title></rect>\n",
                       x0 + bar_w * double(k), top, bar_w - 1, f.bottom - top, colour(k),
                       xml_escape(groups[g] + " " + series[k].name), fmt::format("{:.1f}", v));
    }
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", f.left + slot * (double(g) + 0.5),
                     f.bottom + 18, xml_escape(groups[g]));
  }
  s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"black\"/>\n", f.left, f.bottom,
                   f.right, f.bottom);
  std::vector<std::string> names;
  for (const auto& se : series) names.push_back(se.name);
  s += legend(f, names, false);
  s += "</svg>\n";
  return s;
}

std::string svg_lines(const std::string& title, const std::vector<LineSeries>& series, const std::string& x_label,
                      const std::string& y_label) {
  Frame f;
  f.left = 70;
  f.top = 35;
  f.right = 560;
  f.bottom = 265;
  f.width = 700;
  f.height = 320;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const auto& se : series)
    for (size_t i = 0; i < std::min(se.x.size(), se.y.size()); ++i)
      if (std::isfinite(se.x[i]) && std::isfinite(se.y[i])) {
        xlo = std::min(xlo, se.x[i]), xhi = std::max(xhi, se.x[i]);
        ylo = std::min(ylo, se.y[i]), yhi = std::max(yhi, se.y[i]);
      }
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  ylo = std::min(0.0, ylo);  // losses are >= 0: start the axis at 0 so the eye reads ratios right
  const std::vector<double> xt = nice_ticks(xlo, xhi), yt = nice_ticks(ylo, yhi);
  const double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();

  std::string s = header(f, title);
  s += y_axis(f, yt, y0, y1, y_label);
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1;
  for (const double t : xt) {
    const double px = f.x(t, x0, x1);
    s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"black\"/>\n", px, f.bottom, px,
                     f.bottom + 5);
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", px, f.bottom + 18,
                     xml_escape(tick_label(t, xstep)));
  }
  s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"black\"/>\n", f.left, f.bottom,
                   f.right, f.bottom);
  s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", (f.left + f.right) / 2,
                   f.bottom + 40, xml_escape(x_label));
  for (size_t k = 0; k < series.size(); ++k) {
    std::string pts;
    const auto& se = series[k];
    for (size_t i = 0; i < std::min(se.x.size(), se.y.size()); ++i)
      if (std::isfinite(se.x[i]) && std::isfinite(se.y[i]))
        pts += fmt::format("{}{:.2f},{:.2f}", pts.empty() ? "" : " ", f.x(se.x[i], x0, x1), f.y(se.y[i], y0, y1));
    if (!pts.empty())
      s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", pts, colour(k));
  }
  std::vector<std::string> names;
  for (const auto& se : series) names.push_back(se.name);
  s += legend(f, names, true);
  s += "</svg>\n";
  return s;
}

}  // namespace xv

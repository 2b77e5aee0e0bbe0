# ms/frame, memory and KV-cache bytes against the frame index for `bench stream` CSVs.
# Usage (in the output folder): gnuplot -e "files='a b c'" scripts/plot_stream.gp  -> stream.png
set terminal pngcairo size 1500,500 font ",10"
set output "stream.png"
set datafile separator ","
set key top left noenhanced
set grid
set xlabel "frame"
set multiplot layout 1,3
set title "latency per frame"
set ylabel "ms (log scale)"
set logscale y
plot for [f in files] (f.".csv") using 1:2 with lines title f
unset logscale y
set title "memory: device allocated (CPU: process RSS)"
set ylabel "MiB"
plot for [f in files] (f.".csv") using 1:($11/1048576) with lines title f
set title "KV cache bytes held"
set ylabel "MiB"
plot for [f in files] (f.".csv") using 1:($9/1048576) with lines title f
unset multiplot

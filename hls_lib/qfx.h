// qfx.h: the whole qfx HLS kernel library (see hls_lib/README.md for the calling convention).
#ifndef QFX_H
#define QFX_H

#include "qfx_types.h"
#include "qfx_window.h"
#include "qfx_mac.h"
#include "qfx_dense.h"
#include "qfx_conv2d.h"
#include "qfx_batchnorm.h"
#include "qfx_threshold.h"
#include "qfx_argmax.h"
#include "qfx_activation.h"
#include "qfx_add.h"
#include "qfx_pool.h"
#include "qfx_cast.h"
#include "qfx_concat.h"
#include "qfx_merge_rows.h"
#include "qfx_pad.h"
#include "qfx_upsample.h"
#include "qfx_shiftadd.h"
#include "qfx_axis.h"
#include "qfx_stream.h"
#include "qfx_table.h"
#include "qfx_softmax.h"
#include "qfx_leaky_relu.h"

#endif
